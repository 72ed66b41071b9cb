"""`App()` with no URL finds it where the `conveyor` command does: $CONVEYOR_URL, else the url of
./conveyor.toml (or $CONVEYOR_CONFIG's file), else sqlite:///conveyor.db."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

import conveyor
from conveyor.cli import app as cli_app
from conveyor.config import ConfigError


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_CONFIG", raising=False)
    return tmp_path


def test_app_reads_the_url_of_conveyor_toml(folder: Path) -> None:
    (folder / "conveyor.toml").write_text('url = "sqlite:///from-toml.db"\n')
    app = conveyor.App()
    assert app.url == "sqlite:///from-toml.db"
    app.queue("jobs").send_sync({"n": 1})
    asyncio.run(app.close())
    # the command line reads the same engine
    listed = CliRunner().invoke(cli_app, ["--json", "queues", "list"])
    assert listed.exit_code == 0, listed.output
    assert '"name": "jobs"' in listed.stdout
    assert (folder / "from-toml.db").exists() and not (folder / "conveyor.db").exists()


async def test_conveyor_url_wins_over_conveyor_toml(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "conveyor.toml").write_text('url = "sqlite:///from-toml.db"\n')
    monkeypatch.setenv("CONVEYOR_URL", "memory://")
    async with conveyor.App() as app:
        assert app.url == "memory://"


async def test_conveyor_config_names_another_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "other.toml").write_text('url = "memory://"\n')
    monkeypatch.setenv("CONVEYOR_CONFIG", str(folder / "other.toml"))
    async with conveyor.App() as app:
        assert app.url == "memory://"


async def test_without_either_the_default_sqlite_file(folder: Path) -> None:
    (folder / "conveyor.toml").write_text("[[queues]]\nname = 'jobs'\n")  # no url in it
    async with conveyor.App() as app:
        assert app.url == "sqlite:///conveyor.db"


def test_an_invalid_conveyor_toml_is_an_error_not_ignored(folder: Path) -> None:
    (folder / "conveyor.toml").write_text("urll = 'memory://'\n")
    with pytest.raises(ConfigError, match="did you mean 'url'"):
        conveyor.App()
    assert not (folder / "conveyor.db").exists()
