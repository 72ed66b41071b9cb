"""Partitioned queues (docs/concepts/partitions.md), run unchanged on every engine in ENGINES: the
partition count is a queue setting fixed at creation, and a partitioned queue has the same API
and semantics as any other (stats, peek, purge, pause, replay and groups see it as one)."""

from __future__ import annotations

import pytest

import conveyor
from conveyor.errors import LimitExceeded, PartitionCountFixed, QueuePaused


async def test_the_partition_count_is_kept_and_fixed_at_creation(app: conveyor.App) -> None:
    created = await app.create_queue("events", partitions=8)
    assert created.settings.partitions == 8
    assert (await app.get_queue("events")).settings.partitions == 8
    assert [q.settings.partitions for q in await app.list_queues() if q.name == "events"] == [8]
    updated = await app.update_queue("events", retention_seconds=3600, partitions=8)  # the same count: fine
    assert (updated.settings.partitions, updated.settings.retention_seconds) == (8, 3600)
    with pytest.raises(PartitionCountFixed, match="fixed at creation"):
        await app.update_queue("events", partitions=4, retention_seconds=7200)
    unchanged = await app.get_queue("events")
    assert (unchanged.settings.partitions, unchanged.settings.retention_seconds) == (8, 3600)
    assert (await app.create_queue("plain")).settings.partitions == 1


@pytest.mark.parametrize("partitions", [0, 65, -1, 2.5, "4", True])
async def test_a_partition_count_out_of_range_is_refused_and_creates_nothing(
    app: conveyor.App, partitions: object
) -> None:
    with pytest.raises(LimitExceeded, match="partitions"):
        await app.create_queue("events", partitions=partitions)  # type: ignore[arg-type]
    assert [q.name for q in await app.list_queues()] == []


async def test_a_partitioned_queue_is_one_queue_to_every_operation(app: conveyor.App) -> None:
    await app.create_queue("events", partitions=4)
    await app.create_queue("events-dlq")
    queue = app.queue("events")
    await queue.send_batch(
        [conveyor.SendRequest(n, group=f"g{n % 2}") for n in range(6)] + [conveyor.SendRequest("free")]
    )
    stats = await queue.stats()
    assert (stats.backlog, stats.total) == (7, 7)
    assert [m.body for m in await queue.peek(10)] == [0, 1, 2, 3, 4, 5, "free"]
    first = await queue.pull(batch_size=10)  # one batch across partitions; groups hold
    assert sorted(map(str, (m.body for m in first))) == ["0", "1", "free"]
    await queue.pause()
    with pytest.raises(QueuePaused):
        await queue.pull(batch_size=10)
    await queue.resume()
    await queue.ack([m.lease_id for m in first])
    assert sorted(m.body for m in await queue.pull(batch_size=10)) == [2, 3]
    assert await app.replay("events", to="events-dlq") == 2  # the unleased ones: 4 and 5
    assert await queue.purge() == 2
    assert (await queue.stats()).total == 0
