"""Global behaviour: options anywhere, URL precedence, errors, --debug, completion, python -m conveyor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli import app
from conveyor.cli.state import hoist_global_options
from tests.cli.conftest import Cli, assert_one_error_line


def test_help_lists_every_command(cli: Cli) -> None:
    text = cli.ok("--help").stdout
    for command in ("queues", "send", "messages", "worker", "top", "init"):
        assert command in text


def test_global_options_may_follow_the_command(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli.runner.invoke(app, ["queues", "list", "--json", "--url", cli.url])
    assert result.exit_code == 0, result.output
    assert '"name": "jobs"' in result.stdout


def test_hoisting_stops_at_double_dash() -> None:
    assert hoist_global_options(["send", "q", "--json", "--url=x", "--", "--debug"]) == [
        "--json",
        "--url=x",
        "send",
        "q",
        "--",
        "--debug",
    ]
    assert hoist_global_options(["queues", "list", "--config", "c.toml"]) == [
        "--config",
        "c.toml",
        "queues",
        "list",
    ]


def test_url_flag_wins_over_environment(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    cli.ok("queues", "create", "on-flag-url")  # cli adds --url
    from_env = cli("queues", "create", "on-env-url", url=False)
    assert from_env.exit_code == 0, from_env.output
    assert [q["name"] for q in cli.json("queues", "list")] == ["on-flag-url"]
    listed = cli("--json", "queues", "list", url=False)
    assert [q["name"] for q in json.loads(listed.stdout)] == ["on-env-url"]


def test_default_url_is_sqlite_in_the_current_directory(cli: Cli, tmp_path: Path) -> None:
    result = cli("queues", "create", "jobs", url=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "conveyor.db").exists()


def test_bad_url_is_one_line(cli: Cli) -> None:
    result = cli.runner.invoke(app, ["--url", "nosuch://x", "queues", "list"])
    assert_one_error_line(result, "unknown URL scheme 'nosuch'", "[invalid_url]")


def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli("--debug", "queues", "info", "nope")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "queue 'nope' does not exist [queue_not_found]" in result.stderr


def test_unknown_command_is_a_usage_error(cli: Cli) -> None:
    assert cli("queues", "frobnicate").exit_code == 2


def test_shell_completion_completes_commands(cli: Cli) -> None:
    result = cli.runner.invoke(
        app,
        [],
        env={"_CONVEYOR_COMPLETE": "complete_bash", "COMP_WORDS": "conveyor qu", "COMP_CWORD": "1"},
        prog_name="conveyor",
    )
    assert result.stdout.split() == ["queues"]


@pytest.mark.slow
def test_python_dash_m_conveyor_runs_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", url, "--json", "queues", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_connection_that_cannot_succeed_is_one_error_line(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "q.db"
    result = cli("--url", f"sqlite:///{missing}", "queues", "list", url=False)
    assert_one_error_line(result, f"its folder {missing.parent} does not exist", "[cannot_connect]")


@pytest.mark.parametrize("args", [["--help"], ["queues", "delete", "--help"], ["send", "--help"]])
def test_help_shows_flags_without_a_type(args: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        check=True,
    ).stdout
    assert "<bool>" not in shown  # `--json <bool>` reads as if the flag took a value
    assert "--help" in shown
    if args == ["--help"]:
        assert "needs conveyor[http]" in shown
