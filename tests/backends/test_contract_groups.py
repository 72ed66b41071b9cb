"""Ordered message groups (docs/concepts/groups.md), run unchanged on every engine in ENGINES:
a group's messages are delivered in send order, one at a time; a retried or expired head keeps
its place; different groups and ungrouped messages go on in parallel."""

from __future__ import annotations

import asyncio
import random

import pytest

import conveyor
from conveyor.backends.base import parse_lease_id
from conveyor.core.ids import new_message_id
from conveyor.errors import InvalidGroupId
from conveyor.testing import drain
from conveyor.types import DeadLetter, Settlement
from tests.support.apps import TimeMachine


def bodies(pulled: list[conveyor.PulledMessage]) -> list[object]:
    return sorted((message.body for message in pulled), key=str)


async def test_a_group_has_one_message_out_at_a_time_in_send_order(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch(
        [conveyor.SendRequest(f"a{n}", group="a") for n in range(3)]
        + [conveyor.SendRequest(f"b{n}", group="b") for n in range(2)]
        + ["u0", "u1"]
    )
    first = await queue.pull(batch_size=10)
    assert bodies(first) == ["a0", "b0", "u0", "u1"]
    assert {m.body: m.group for m in first} == {"a0": "a", "b0": "b", "u0": None, "u1": None}
    assert await queue.pull(batch_size=10) == []  # a1 and b1 wait for their heads
    [a0] = [m for m in first if m.body == "a0"]
    assert (await queue.ack(acks=[a0.lease_id])).ack_count == 1
    assert bodies(await queue.pull(batch_size=10)) == ["a1"]


async def test_send_sync_takes_a_group(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await asyncio.to_thread(queue.send_sync, "first", group="g")
    await queue.send("second", group="g")
    [pulled] = await queue.pull(batch_size=10)
    assert (pulled.body, pulled.group) == ("first", "g")


async def test_peek_and_stats_show_grouped_messages(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send("x", group="user-42")
    await queue.send("y", group="user-42")
    peeked = await queue.peek()
    assert [(m.body, m.group) for m in peeked] == [("x", "user-42"), ("y", "user-42")]
    assert (await queue.stats()).total == 2


async def test_a_retried_head_keeps_its_place_and_its_delay_holds_the_group(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(2)] + ["free"])
    pulled = await queue.pull(batch_size=10)
    assert bodies(pulled) == [0, "free"]
    [head] = [m for m in pulled if m.body == 0]
    await queue.ack(retries=[head.lease_id])
    [again] = await queue.pull(batch_size=10)
    assert (again.body, again.attempts) == (0, 2)  # the head again, not the next
    await app.core.settle("orders", Settlement(retries=[conveyor.types.Retry(again.lease_id, 1.0)]))
    await queue.send("later")
    assert bodies(await queue.pull(batch_size=10)) == ["later"]  # the delayed head holds its group
    await time_machine.advance(1.3)
    [third] = await queue.pull(batch_size=10)
    assert (third.body, third.attempts) == (0, 3)


async def test_a_delayed_send_holds_the_messages_sent_after_it_in_its_group(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send("later", group="g", delay_seconds=1)
    await queue.send("next", group="g")
    assert await queue.pull(batch_size=10) == []
    await time_machine.advance(1.3)
    [first] = await queue.pull(batch_size=10)
    assert first.body == "later"


async def test_a_released_head_comes_back_at_once_as_the_head(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
    [head] = await queue.pull(batch_size=10)
    assert await app.core.release("orders", [head.lease_id]) == 1
    [again] = await queue.pull(batch_size=10)
    assert (again.body, again.attempts) == (0, 1)


async def test_a_consumer_handles_a_group_in_order_and_sees_each_message_group(app: conveyor.App) -> None:
    seen: list[tuple[str | None, object]] = []

    @app.consumer("orders", max_batch_size=10)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        seen.extend((message.group, message.body) for message in batch.messages)

    await app.queue("orders").send_batch([conveyor.SendRequest(n, group="g") for n in range(5)] + ["free"])
    assert await drain(app) == 6
    assert [body for group, body in seen if group == "g"] == list(range(5))
    assert (None, "free") in seen


async def test_an_expired_lease_gives_the_same_head_back(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
    [_first] = await queue.pull(batch_size=10, visibility_timeout=0.5)
    assert await queue.pull(batch_size=10) == []
    await time_machine.advance(0.8)
    [second] = await queue.pull(batch_size=10)
    assert (second.body, second.attempts) == (0, 2)
    assert (await queue.ack(acks=[second.lease_id])).ack_count == 1
    [third] = await queue.pull(batch_size=10)
    assert third.body == 1


async def test_a_dead_lettered_head_frees_its_group_and_a_replay_keeps_its_group(app: conveyor.App) -> None:
    queue = app.queue("jobs")
    await app.create_queue("jobs-dlq")
    await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(3)])
    [head] = await queue.pull(batch_size=10)
    dead = DeadLetter(head.lease_id, new_message_id(), "boom", "jobs-dlq", 1)
    assert (await app.core.settle("jobs", Settlement(dead_letters=[dead]))).dead_lettered == 1
    [dead_copy] = await app.queue("jobs-dlq").peek()
    assert (dead_copy.body, dead_copy.group) == (0, "g")
    [next_one] = await queue.pull(batch_size=10)
    assert next_one.body == 1
    # replayed while 1 is out: it joins the group's end, and waits its turn
    assert await app.replay("jobs-dlq", to="jobs") == 1
    assert await queue.pull(batch_size=10) == []
    await queue.ack(acks=[next_one.lease_id])
    [two] = await queue.pull(batch_size=10)
    assert two.body == 2
    await queue.ack(acks=[two.lease_id])
    [replayed] = await queue.pull(batch_size=10)
    assert (replayed.body, replayed.group) == (0, "g")


async def test_a_read_ahead_lease_of_a_head_holds_its_group(app: conveyor.App) -> None:
    await app.create_queue("orders")
    await app.queue("orders").send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
    backend = await app.core.connected()
    [ahead] = await backend.lease_many("orders", 10, 30, handed=False)
    assert ahead.group == "g"
    assert await backend.lease_many("orders", 10, 30) == []
    lease = parse_lease_id(ahead.lease_id, backend.lease_rows)
    assert lease is not None
    assert await backend.begin("orders", [lease]) == [True]
    assert await backend.lease_many("orders", 10, 30) == []


async def test_purge_and_delete_forget_groups(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
    [_] = await queue.pull(batch_size=10)
    assert await queue.purge() == 2
    await queue.send("fresh", group="g")
    [fresh] = await queue.pull(batch_size=10)
    assert fresh.body == "fresh"
    await app.delete_queue("orders")
    await app.create_queue("orders")
    await queue.send("again", group="g")
    [again] = await queue.pull(batch_size=10)
    assert again.body == "again"


async def test_a_deduplicated_send_does_not_join_the_group(app: conveyor.App) -> None:
    queue = app.queue("orders")
    first = await queue.send(1, group="g", dedup_id="d")
    assert await queue.send(1, group="g", dedup_id="d") == first
    [head] = await queue.pull(batch_size=10)
    await queue.ack(acks=[head.lease_id])
    assert await queue.pull(batch_size=10) == []


@pytest.mark.parametrize("group", ["", "has space", "x" * 129, "é", 42])
async def test_a_bad_group_id_is_refused_and_stores_nothing(app: conveyor.App, group: object) -> None:
    queue = app.queue("orders")
    await app.create_queue("orders")
    with pytest.raises(InvalidGroupId):
        await queue.send("x", group=group)  # type: ignore[arg-type]
    with pytest.raises(InvalidGroupId):
        await queue.send_batch(["ok", conveyor.SendRequest("x", group=group)])  # type: ignore[arg-type]
    assert (await queue.stats()).total == 0


async def test_many_consumers_keep_each_group_in_order_and_one_at_a_time(app: conveyor.App) -> None:
    """Consumers lease in parallel; each group's messages are handled in send order, never two
    of a group at once, while groups interleave. Fails if the group rule is taken out."""
    queue = app.queue("orders")
    groups, per_group = 6, 12
    requests = [
        conveyor.SendRequest({"g": g, "n": n}, group=f"g{g}") for n in range(per_group) for g in range(groups)
    ]
    await queue.send_batch(requests[:60])
    await queue.send_batch(requests[60:])
    handled: dict[int, list[int]] = {g: [] for g in range(groups)}
    out: set[int] = set()
    overlaps: list[int] = []
    most_groups_out = 0
    rng = random.Random(7)

    async def consumer() -> None:
        nonlocal most_groups_out
        idle = 0
        while idle < 20:
            pulled = await queue.pull(batch_size=rng.randint(1, 8), visibility_timeout=60)
            if not pulled:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for message in pulled:
                g = message.body["g"]
                if g in out:
                    overlaps.append(g)
                out.add(g)
            most_groups_out = max(most_groups_out, len(out))
            await asyncio.sleep(rng.random() / 100)
            for message in pulled:
                handled[message.body["g"]].append(message.body["n"])
                out.discard(message.body["g"])
            await queue.ack(acks=[message.lease_id for message in pulled])
            if sum(len(ns) for ns in handled.values()) == groups * per_group:
                return

    await asyncio.gather(*(consumer() for _ in range(8)))
    assert overlaps == []
    assert handled == {g: list(range(per_group)) for g in range(groups)}
    assert most_groups_out > 1  # groups went on in parallel
