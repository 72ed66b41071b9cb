"""`conveyor bench` and `conveyor dev` hand their arguments to the checkout's bench/ and demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("command", "usage"), [("bench", "python -m bench"), ("dev", "examples.linkclicks")])
def test_checkout_commands_pass_their_arguments_through(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, command: str, usage: str
) -> None:
    monkeypatch.chdir(ROOT)
    result = cli(command, "--help", url=False)
    assert result.exit_code == 0, result.output
    assert usage in result.stdout


def test_bench_refuses_an_unknown_engine(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = cli("bench", "--smoke", "--engines", "kafka", url=False)
    assert result.exit_code == 2
