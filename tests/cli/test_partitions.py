"""Partitioned queues through the CLI, conveyor.toml and the HTTP API: the count is set at
creation, shown, and another count later is a clear error that changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor
from conveyor.cli.config import apply_queues, parse_config
from tests.cli.conftest import Cli


def test_queues_create_takes_a_partition_count_and_info_shows_it(cli: Cli) -> None:
    assert cli.json("queues", "create", "events", "--partitions", "8")["partitions"] == 8
    assert cli.json("queues", "info", "events")["partitions"] == 8
    assert "8 partitions" in cli.ok("queues", "create", "other", "--partitions", "8").stdout
    assert cli.json("queues", "create", "plain")["partitions"] == 1
    result = cli("queues", "create", "wide", "--partitions", "65")
    assert result.exit_code != 0 and "--partitions" in result.output
    assert "wide" not in [q["name"] for q in cli.json("queues", "list")]


async def test_conveyor_toml_sets_partitions_at_creation_and_refuses_another_count(tmp_path: Path) -> None:
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        declared = parse_config('[[queues]]\nname = "events"\npartitions = 4\n')
        assert await apply_queues(app, declared) == ["events"]
        assert (await app.get_queue("events")).settings.partitions == 4
        assert await apply_queues(app, declared) == []  # already as declared
        with pytest.raises(conveyor.PartitionCountFixed):
            await apply_queues(app, parse_config('[[queues]]\nname = "events"\npartitions = 2\n'))
        assert (await app.get_queue("events")).settings.partitions == 4
