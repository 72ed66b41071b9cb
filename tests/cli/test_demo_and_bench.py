"""`conveyor dev` and `conveyor bench` hand their arguments to the packaged demo and benchmarks."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli


@pytest.mark.parametrize(("command", "usage"), [("bench", "conveyor bench"), ("dev", "conveyor.demo")])
def test_dev_and_bench_pass_their_arguments_through(cli: Cli, command: str, usage: str) -> None:
    result = cli(command, "--help", url=False)
    assert result.exit_code == 0, result.output
    assert usage in result.stdout


def test_bench_refuses_an_unknown_engine(cli: Cli) -> None:
    result = cli("bench", "--smoke", "--engines", "kafka", url=False)
    assert result.exit_code == 2
