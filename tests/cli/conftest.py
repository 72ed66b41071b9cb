from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner, Result

import conveyor
from conveyor.cli import app

T = TypeVar("T")


@dataclass
class Cli:
    """Runs `conveyor --url <test database> ARGS` in process and reads the database through the API."""

    url: str
    runner: CliRunner = field(default_factory=CliRunner)

    def __call__(self, *args: str, input: str | bytes | None = None, url: bool = True) -> Result:
        prefix = ["--url", self.url] if url else []
        # a wide terminal so rich tables are not truncated
        return self.runner.invoke(app, [*prefix, *args], input=input, env={"COLUMNS": "200"})

    def ok(self, *args: str, input: str | bytes | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, input: str | bytes | None = None) -> Any:
        return json.loads(self.ok("--json", *args, input=input).stdout)

    def api(self, work: Callable[[conveyor.App], Awaitable[T]]) -> T:
        import asyncio

        async def main() -> T:
            async with conveyor.App(self.url) as api_app:
                return await work(api_app)

        return asyncio.run(main())


def assert_one_error_line(result: Result, *expected: str) -> None:
    """Exit code 1, one line on stderr naming the problem, and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    # each test in its own directory: no stray conveyor.toml, no conveyor.db left in the repository
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_CONFIG", raising=False)
    # the worker puts the CWD on sys.path and sets the conveyor logger's level: undo both afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    logger = logging.getLogger("conveyor")
    monkeypatch.setattr(logger, "level", logger.level)
    return Cli(f"sqlite:///{tmp_path / 'cli.db'}")
