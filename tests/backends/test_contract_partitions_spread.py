"""A partitioned queue spread over its partitions (docs/concepts/partitions.md), run unchanged on
every engine in ENGINES: pulls take from every partition and a batch may mix them; leases of
several partitions renew and settle together; groups keep their order under concurrent pullers;
dead letters, replays, deletes, peeks, limits and retention see one queue. On the engines whose
partitions are physical (NATS streams, Redis Cluster slots) this is what spreading must keep."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

import conveyor
from conveyor.core.ids import new_message_id
from conveyor.errors import QueueFull
from conveyor.types import DeadLetter, Settlement
from tests.support.apps import TimeMachine

PARTITIONS = 8


async def pull_all(queue: conveyor.Queue, batch_size: int) -> list[conveyor.PulledMessage]:
    """Pull and ack until the queue gives nothing more; every message pulled, in pull order."""
    pulled: list[conveyor.PulledMessage] = []
    while batch := await queue.pull(batch_size=batch_size):
        pulled += batch
        await queue.ack([m.lease_id for m in batch])
    return pulled


async def test_small_pulls_deliver_every_message_of_every_partition_once(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    await queue.send_batch(list(range(40)))
    await queue.send_batch([conveyor.SendRequest(f"g{n}", group=f"user-{n}") for n in range(10)])
    pulled = await pull_all(queue, batch_size=3)
    assert sorted(map(str, (m.body for m in pulled))) == sorted(
        [*map(str, range(40)), *(f"g{n}" for n in range(10))]
    )
    assert all(m.attempts == 1 for m in pulled)
    assert (await queue.stats()).total == 0


async def test_one_pull_takes_the_heads_of_groups_in_every_partition(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    # 24 groups land in every partition (placement by group); each has a head and one behind it
    await queue.send_batch(
        [conveyor.SendRequest(f"{n}-{i}", group=f"g{n}") for i in range(2) for n in range(24)]
    )
    first = await queue.pull(batch_size=100)
    assert sorted(m.body for m in first) == sorted(f"{n}-0" for n in range(24))
    assert await queue.pull(batch_size=100) == []  # every group's next waits for its head
    await queue.ack([m.lease_id for m in first])
    second = await queue.pull(batch_size=100)
    assert sorted(m.body for m in second) == sorted(f"{n}-1" for n in range(24))


async def test_leases_of_several_partitions_renew_and_settle_in_one_call(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    await queue.send_batch([conveyor.SendRequest(n, group=f"g{n}") for n in range(16)])
    leased = await queue.pull(batch_size=16, visibility_timeout=30)
    assert len(leased) == 16
    renewed = await queue.extend([m.lease_id for m in leased] + ["nosuchid.h0123456789abcdef0123456789abcde"])
    assert (renewed.extended_count, len(renewed.warnings)) == (16, 1)
    acked, retried = leased[:8], leased[8:]
    result = await queue.ack(acks=[m.lease_id for m in acked], retries=[m.lease_id for m in retried])
    assert (result.ack_count, result.retry_count, result.warnings) == (8, 8, [])
    again = await queue.pull(batch_size=16)
    assert sorted(m.body for m in again) == sorted(m.body for m in retried)
    assert {m.attempts for m in again} == {2}
    stale = await queue.ack(acks=[m.lease_id for m in acked])  # settled already: stale, nothing changes
    assert (stale.ack_count, len(stale.warnings)) == (0, 8)


async def test_groups_keep_their_order_under_concurrent_pullers(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    groups, per_group = 12, 6
    for i in range(per_group):  # interleaved, several batches: each group's order is send order
        await queue.send_batch([conveyor.SendRequest([n, i], group=f"g{n}") for n in range(groups)])
    delivered: dict[int, list[int]] = defaultdict(list)
    out: set[int] = set()
    overlaps: list[int] = []

    async def puller() -> None:
        idle = 0
        while idle < 3:
            batch = await queue.pull(batch_size=4)
            if not batch:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for message in batch:
                group, index = message.body
                if group in out:
                    overlaps.append(group)
                out.add(group)
                delivered[group].append(index)
            await asyncio.sleep(0)  # let the others pull while these are out
            for message in batch:
                out.discard(message.body[0])
            await queue.ack([m.lease_id for m in batch])

    await asyncio.gather(*(puller() for _ in range(4)))
    assert overlaps == []  # never two of one group out at once
    assert dict(delivered) == {n: list(range(per_group)) for n in range(groups)}


async def test_dead_letters_and_replays_cross_between_partitioned_queues(app: conveyor.App) -> None:
    await app.create_queue("work", partitions=4)
    await app.create_queue("work-dlq", partitions=3)
    queue = app.queue("work")
    await queue.send_batch(
        [conveyor.SendRequest(n, group=f"g{n % 5}", headers={"n": str(n)}) for n in range(5)]
        + [conveyor.SendRequest(f"free{n}") for n in range(5)]
    )
    leased = await queue.pull(batch_size=10)
    assert len(leased) == 10
    dead = [DeadLetter(m.lease_id, new_message_id(), "boom", "work-dlq", 1) for m in leased]
    assert (await app.core.settle("work", Settlement(dead_letters=dead))).dead_lettered == 10
    assert (await queue.stats()).total == 0
    dlq = app.queue("work-dlq")
    copies = await dlq.peek(100)
    assert sorted(map(str, (m.body for m in copies))) == sorted(
        [*map(str, range(5)), *(f"free{n}" for n in range(5))]
    )
    assert {m.body: m.group for m in copies if isinstance(m.body, int)} == {n: f"g{n % 5}" for n in range(5)}
    assert all(m.headers["n"] == str(m.body) for m in copies if isinstance(m.body, int))
    assert await app.replay("work-dlq", to="work", limit=4) == 4
    assert await app.replay("work-dlq", to="work") == 6
    assert (await dlq.stats()).total == 0
    back = await pull_all(queue, batch_size=10)
    assert sorted(map(str, (m.body for m in back))) == sorted(map(str, (m.body for m in copies)))
    assert {m.attempts for m in back} == {1}


async def test_peek_shows_the_whole_queue_with_each_group_in_send_order(app: conveyor.App) -> None:
    # across partitions the merge is by time, best effort (docs/concepts/partitions.md): what is
    # promised is every message once, and each group's order
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    await queue.send_batch([conveyor.SendRequest(n, group=f"g{n % 3}") for n in range(12)])
    await queue.send("alone")
    await queue.send_batch(list(range(12, 20)))
    peeked = [m.body for m in await queue.peek(100)]
    assert sorted(map(str, peeked)) == sorted(map(str, [*range(20), "alone"]))
    for group in range(3):
        in_group = [body for body in peeked if isinstance(body, int) and body < 12 and body % 3 == group]
        assert in_group == list(range(group, 12, 3))
    assert len(await queue.peek(5)) == 5


async def test_a_message_of_any_partition_is_deleted_by_id(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    grouped = await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(3)])
    free = await queue.send_batch(list(range(3, 11)))
    deduplicated = await queue.send("d", dedup_id="order-7")
    assert await queue.delete(grouped[0])  # the group's head: its next is deliverable
    assert await queue.delete(free[5])
    assert await queue.delete(deduplicated)
    assert not await queue.delete(free[5])
    assert not await queue.delete(new_message_id())
    bodies = [m.body for m in await pull_all(queue, batch_size=100)]
    assert sorted(map(str, bodies)) == sorted(map(str, [1, 2, 3, 4, 5, 6, 7, 9, 10]))


async def test_a_dedup_id_is_stored_once_in_a_partitioned_queue(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    first = await queue.send("a", dedup_id="order-1")
    ids = await queue.send_batch(
        [
            conveyor.SendRequest("b", dedup_id="order-1"),
            conveyor.SendRequest("c", dedup_id="order-2"),
            conveyor.SendRequest("d", dedup_id="order-2"),
            conveyor.SendRequest("e", dedup_id="order-3", group="g"),
            conveyor.SendRequest("f", dedup_id="order-3", group="g"),
        ]
    )
    assert ids[0] == first and ids[2] == ids[1] and ids[4] == ids[3]
    assert sorted(m.body for m in await queue.peek(100)) == ["a", "c", "e"]


async def test_backlog_limits_hold_for_the_whole_partitioned_queue(app: conveyor.App) -> None:
    await app.create_queue("bounded", partitions=PARTITIONS, max_backlog_messages=10)
    queue = app.queue("bounded")
    await queue.send_batch(list(range(6)))
    with pytest.raises(QueueFull):
        await queue.send_batch(list(range(6, 11)))  # 11 in all: refused, none of it stored
    assert (await queue.stats()).total == 6
    await queue.send_batch(list(range(6, 10)))
    with pytest.raises(QueueFull):
        await queue.send("one more")
    assert (await queue.stats()).total == 10
    [taken] = await queue.pull(batch_size=1)
    await queue.ack([taken.lease_id])
    await queue.send("fits again")
    assert (await queue.stats()).total == 10


async def test_retention_and_purge_cover_every_partition(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.create_queue("spread", partitions=PARTITIONS, retention_seconds=1)
    queue = app.queue("spread")
    await queue.send_batch(list(range(16)))
    await time_machine.advance(1.5)
    await queue.send_batch(list(range(16, 32)))
    assert await app.sweep() == 16
    assert sorted(m.body for m in await queue.peek(100)) == list(range(16, 32))
    assert await queue.purge() == 16
    stats = await queue.stats()
    assert (stats.total, stats.bytes) == (0, 0)


async def test_a_paused_partitioned_queue_leases_from_no_partition(app: conveyor.App) -> None:
    await app.create_queue("spread", partitions=PARTITIONS)
    queue = app.queue("spread")
    await queue.pause()
    await queue.send_batch([conveyor.SendRequest(n, group=f"g{n}") for n in range(16)])
    assert (await queue.stats()).paused
    assert await app.backend.lease_many("spread", 100, 30) == []  # the engine, under the pull's check
    await queue.resume()
    assert len(await pull_all(queue, batch_size=100)) == 16
