"""Partitioned queues (docs/concepts/partitions.md), run unchanged on every engine in ENGINES: the
partition count is a queue setting fixed at creation, and a partitioned queue has the same API
and semantics as any other (stats, peek, purge, pause, replay and groups see it as one), with
one rule of its own: a dedup id is unique within the partition its message is placed in."""

from __future__ import annotations

import asyncio
import random
from itertools import count

import pytest

import conveyor
from conveyor.backends.base import handed_lease_id, is_ahead
from conveyor.backends.partitioning import place
from conveyor.core.ids import new_message_id
from conveyor.errors import LimitExceeded, MessageLeased, PartitionCountFixed, QueueFull, QueuePaused
from conveyor.testing import drain
from conveyor.types import DeadLetter, Settlement
from tests.support.apps import TimeMachine


def group_in(partition: int, partitions: int, *, besides: str = "") -> str:
    """A group id placed in `partition` of a queue of `partitions` (other than `besides`)."""
    return next(
        f"group-{n}"
        for n in count()
        if place(f"group-{n}", None, "", partitions) == partition and f"group-{n}" != besides
    )


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
    peeked = [m.body for m in await queue.peek(10)]
    # oldest first within a partition; across partitions (apart on some engines) in any order
    assert sorted(map(str, peeked)) == ["0", "1", "2", "3", "4", "5", "free"]
    assert [b for b in peeked if b in (0, 2, 4)] == [0, 2, 4]
    assert [b for b in peeked if b in (1, 3, 5)] == [1, 3, 5]
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


async def test_many_consumers_keep_each_group_in_order_across_partitions(app: conveyor.App) -> None:
    """Groups spread over 8 partitions; consumers pull batches that mix partitions; each group's
    messages are handled in send order and never two at once. Fails if the group rule is taken
    out of a partition's lease."""
    await app.create_queue("orders", partitions=8)
    queue = app.queue("orders")
    groups, per_group = 12, 8
    requests = [
        conveyor.SendRequest({"g": g, "n": n}, group=f"user-{g}")
        for n in range(per_group)
        for g in range(groups)
    ]
    await queue.send_batch(requests[:50])
    await queue.send_batch(requests[50:])
    assert len({place(f"user-{g}", None, "", 8) for g in range(groups)}) > 1  # they do spread
    handled: dict[int, list[int]] = {g: [] for g in range(groups)}
    out: set[int] = set()
    overlaps: list[int] = []
    rng = random.Random(25)

    async def consumer() -> None:
        idle = 0
        while idle < 20 and sum(len(ns) for ns in handled.values()) < groups * per_group:
            pulled = await queue.pull(batch_size=rng.randint(1, 8), visibility_timeout=60)
            if not pulled:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for message in pulled:
                if message.body["g"] in out:
                    overlaps.append(message.body["g"])
                out.add(message.body["g"])
            await asyncio.sleep(rng.random() / 100)
            for message in pulled:
                handled[message.body["g"]].append(message.body["n"])
                out.discard(message.body["g"])
            await queue.ack(acks=[message.lease_id for message in pulled])

    await asyncio.gather(*(consumer() for _ in range(6)))
    assert overlaps == []
    assert handled == {g: list(range(per_group)) for g in range(groups)}


async def test_a_dedup_id_is_unique_within_the_partition_its_message_is_placed_in(app: conveyor.App) -> None:
    await app.create_queue("orders", partitions=4)
    queue = app.queue("orders")
    # without a group a message goes by its dedup id: the id is unique in the whole queue
    first = await queue.send("a", dedup_id="order-7")
    assert await queue.send("b", dedup_id="order-7") == first
    assert (await queue.send_batch(["c", conveyor.SendRequest("d", dedup_id="order-7")]))[1] == first
    # with a group it goes by its group: the id is checked within the group's partition
    home = place(None, "order-7", "", 4)
    elsewhere = (home + 1) % 4
    near, far = group_in(home, 4), group_in(elsewhere, 4)
    assert await queue.send("e", dedup_id="order-7", group=near) == first  # same partition
    far_id = await queue.send("f", dedup_id="order-7", group=far)  # another partition: stored
    assert far_id != first
    neighbour = group_in(elsewhere, 4, besides=far)
    assert await queue.send("g", dedup_id="order-7", group=neighbour) == far_id
    assert sorted(m.body for m in await queue.peek(10)) == ["a", "c", "f"]


async def test_a_queue_of_one_partition_keeps_a_dedup_id_unique_across_groups(app: conveyor.App) -> None:
    queue = app.queue("orders")
    first = await queue.send("a", dedup_id="order-7", group=group_in(0, 4))
    assert await queue.send("b", dedup_id="order-7", group=group_in(1, 4)) == first
    assert await queue.send("c", dedup_id="order-7") == first


async def test_a_batch_mixing_partitions_is_stored_and_leased_whole(app: conveyor.App) -> None:
    await app.create_queue("clicks", partitions=8)
    queue = app.queue("clicks")
    ids = await queue.send_batch([{"n": n} for n in range(40)])
    assert len(set(ids)) == 40
    assert len({place(None, None, message_id, 8) for message_id in ids}) > 1
    assert (await queue.stats()).backlog == 40
    leased = await queue.pull(batch_size=100)  # one pull reaches every partition
    assert sorted(m.id for m in leased) == sorted(ids)
    result = await queue.ack(
        acks=[m.lease_id for m in leased[:30]], retries=[m.lease_id for m in leased[30:]]
    )
    assert (result.ack_count, result.retry_count, result.warnings) == (30, 10, [])
    again = await queue.pull(batch_size=100)
    assert sorted(m.id for m in again) == sorted(m.id for m in leased[30:])
    assert {m.attempts for m in again} == {2}
    assert (await queue.ack(acks=[m.lease_id for m in again])).ack_count == 10
    assert (await queue.stats()).total == 0


async def test_leases_turn_over_the_partitions(app: conveyor.App) -> None:
    """Small pulls of a backlog in every partition reach them all, not the first one's only
    (sent in turn over the partitions, so oldest-first engines reach them all too)."""
    await app.create_queue("clicks", partitions=4)
    queue = app.queue("clicks")
    keys: dict[int, list[str]] = {p: [] for p in range(4)}
    for n in count():
        key = f"click-{n}"
        keys[place(None, key, "", 4)].append(key)
        if min(len(placed) for placed in keys.values()) >= 10:
            break
    await queue.send_batch(
        [
            conveyor.SendRequest(key, dedup_id=key)
            for turn in range(10)
            for key in (keys[p][turn] for p in range(4))
        ]
    )
    served = set()
    for _ in range(8):
        served |= {place(None, str(m.body), "", 4) for m in await queue.pull(batch_size=1)}
    assert served == {0, 1, 2, 3}


async def test_renewals_releases_and_stale_leases_find_their_partition(app: conveyor.App) -> None:
    await app.create_queue("clicks", partitions=4)
    queue = app.queue("clicks")
    await queue.send_batch([{"n": n} for n in range(12)])
    leased = await queue.pull(batch_size=12, visibility_timeout=30)
    lease_ids = [m.lease_id for m in leased]
    assert await app.core.extend_leases("clicks", lease_ids, 60) == 12
    assert await app.core.release("clicks", lease_ids[:4]) == 4
    assert (await queue.stats()).in_flight == 8
    result = await queue.ack(acks=lease_ids)
    assert (result.ack_count, len(result.warnings)) == (8, 4)  # released ones are stale now
    assert len(await queue.pull(batch_size=12)) == 4


async def test_stats_peek_delete_and_pause_see_every_partition(app: conveyor.App) -> None:
    await app.create_queue("clicks", partitions=8)
    queue = app.queue("clicks")
    ids = await queue.send_batch([{"n": n} for n in range(16)])
    await queue.send({"n": "later"}, delay_seconds=600)
    stats = await queue.stats()
    assert (stats.backlog, stats.delayed, stats.in_flight) == (16, 1, 0)
    peeked = await queue.peek(100)
    assert len(peeked) == 17
    assert set(ids) < {m.id for m in peeked}
    assert len(await queue.peek(3)) == 3
    assert await queue.delete(ids[5]) is True
    assert await queue.delete(ids[5]) is False
    leased = await queue.pull(batch_size=4)
    with pytest.raises(MessageLeased):
        await queue.delete(leased[0].id)
    assert ((await queue.stats()).backlog, (await queue.stats()).in_flight) == (11, 4)
    await queue.pause()
    assert await app.backend.lease_many("clicks", 100, 30) == []  # no partition delivers
    with pytest.raises(QueuePaused):
        await queue.pull(batch_size=10)
    assert (await queue.stats()).paused
    await queue.resume()
    assert len(await queue.pull(batch_size=100)) == 11
    assert await queue.purge() == 16


async def test_dead_letters_and_replays_between_partitioned_queues_keep_groups(
    app: conveyor.App,
) -> None:
    await app.create_queue("work", partitions=4)
    await app.create_queue("work-dlq", partitions=3)
    work = app.queue("work")
    await work.send_batch([conveyor.SendRequest({"n": n}, group=f"g{n % 3}") for n in range(6)] + ["free"])
    pulled = await work.pull(batch_size=10)  # the three heads and the free one
    assert len(pulled) == 4
    dead = [DeadLetter(m.lease_id, new_message_id(), "boom", "work-dlq", m.attempts) for m in pulled]
    result = await app.core.settle("work", Settlement(dead_letters=dead))
    assert result.dead_lettered == 4
    dlq = app.queue("work-dlq")
    copies = await dlq.peek(10)
    assert sorted(str(m.body) for m in copies) == sorted(str(m.body) for m in pulled)
    assert {m.dead_letter.original_id for m in copies if m.dead_letter} == {m.id for m in pulled}
    # the heads went: each group's next is deliverable
    assert sorted(m.body["n"] for m in await work.pull(batch_size=10)) == [3, 4, 5]
    assert await app.replay("work-dlq", to="work") == 4
    assert (await dlq.stats()).total == 0
    back = {m.id: m for m in await work.peek(20)}
    assert {copy.id for copy in copies} <= set(back)
    assert {back[copy.id].group for copy in copies} == {"g0", "g1", "g2", None}


async def test_retention_sweeps_every_partition(app: conveyor.App, time_machine: TimeMachine) -> None:
    await app.create_queue("short", retention_seconds=1, partitions=4)
    queue = app.queue("short")
    await queue.send_batch([{"n": n} for n in range(12)])
    await time_machine.advance(1.5)
    young = await queue.send({"n": "young"})
    assert await app.sweep() == 12
    assert [m.id for m in await queue.peek(20)] == [young]
    assert (await queue.stats()).total == 1


async def test_backlog_limits_count_the_whole_queue(app: conveyor.App) -> None:
    await app.create_queue("bounded", partitions=4, max_backlog_messages=10)
    queue = app.queue("bounded")
    await queue.send_batch([{"n": n} for n in range(8)])  # spread over the partitions
    with pytest.raises(QueueFull, match="max_backlog_messages"):
        await queue.send_batch([{"n": n} for n in range(3)])
    assert (await queue.stats()).total == 8  # nothing of the refused batch
    await queue.send_batch([{"n": n} for n in range(2)])
    with pytest.raises(QueueFull):
        await queue.send({"n": "one too many"})
    assert (await queue.stats()).total == 10


async def test_a_lease_ahead_of_a_partitioned_queue_hands_the_first_it_asks_or_none(
    app: conveyor.App,
) -> None:
    await app.create_queue("clicks", partitions=4)
    queue = app.queue("clicks")
    await queue.send_batch([{"n": n} for n in range(20)])
    backend = await app.core.connected()
    leased = await backend.lease_ahead("clicks", 12, 30, hand_first=4)
    assert len(leased) == 12
    assert [m for m in leased if not is_ahead(m.lease_id)] in ([], leased[:4])
    short = await backend.lease_ahead("clicks", 12, 30, hand_first=12)  # takes 8: fewer than it would hand
    assert len(short) == 8
    assert all(is_ahead(m.lease_id) for m in short)
    ahead = [m.lease_id for m in leased + short if is_ahead(m.lease_id)]
    assert await app.core.begin("clicks", ahead) == [True] * len(ahead)
    handed = [m.lease_id if not is_ahead(m.lease_id) else handed_lease_id(m.lease_id) for m in leased + short]
    assert (await queue.ack(acks=handed)).ack_count == 20
    assert (await queue.stats()).total == 0


async def test_a_worker_drains_a_partitioned_queue_once_each_and_groups_in_order(app: conveyor.App) -> None:
    seen: list[tuple[str | None, object]] = []

    @app.consumer("orders", max_batch_size=7, max_concurrency=4)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        seen.extend((message.group, message.body) for message in batch.messages)

    await app.create_queue("orders", partitions=8)
    await app.queue("orders").send_batch(
        [conveyor.SendRequest(n, group=f"g{n % 5}") for n in range(60)] + [f"free-{n}" for n in range(40)]
    )
    assert await drain(app) == 100
    assert len(seen) == 100
    for g in range(5):
        assert [body for group, body in seen if group == f"g{g}"] == list(range(g, 60, 5))
    assert sorted(str(body) for group, body in seen if group is None) == sorted(
        f"free-{n}" for n in range(40)
    )
