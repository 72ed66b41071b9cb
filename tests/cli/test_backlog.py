"""Backlog limits through the CLI and conveyor.toml (issue 32)."""

from __future__ import annotations

from pathlib import Path

import conveyor
from conveyor.cli.config import apply_queues, parse_config
from tests.cli.conftest import Cli


def test_queues_create_and_update_set_and_remove_backlog_limits(cli: Cli) -> None:
    created = cli.json(
        "queues", "create", "jobs", "--max-backlog-messages", "2", "--max-backlog-bytes", "1000"
    )
    assert (created["max_backlog_messages"], created["max_backlog_bytes"]) == (2, 1000)
    assert "2 messages" in cli.ok("queues", "info", "jobs").stdout
    cli.ok("send", "jobs", "1")
    cli.ok("send", "jobs", "2")
    result = cli("send", "jobs", "3")
    assert result.exit_code == 1 and "queue_full" in result.output
    updated = cli.json("queues", "update", "jobs", "--max-backlog-messages", "0")
    assert (updated["max_backlog_messages"], updated["max_backlog_bytes"]) == (None, 1000)
    cli.ok("send", "jobs", "3")


async def test_conveyor_toml_declares_backlog_limits_and_removing_one_lifts_it(tmp_path: Path) -> None:
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        bounded = parse_config(
            '[[queues]]\nname = "jobs"\nmax_backlog_messages = 10\nmax_backlog_bytes = 500\n'
        )
        assert await apply_queues(app, bounded) == ["jobs"]
        settings = (await app.get_queue("jobs")).settings
        assert (settings.max_backlog_messages, settings.max_backlog_bytes) == (10, 500)
        assert await apply_queues(app, bounded) == []  # already as declared
        assert await apply_queues(app, parse_config('[[queues]]\nname = "jobs"\n')) == ["jobs"]
        settings = (await app.get_queue("jobs")).settings
        assert (settings.max_backlog_messages, settings.max_backlog_bytes) == (None, None)
