"""Ordered message groups together with the other features, run unchanged on every engine in
ENGINES: deleting a message by id (the head or one behind it), headers, and the dead letters of
a pull consumer, and a lease ahead (docs/concepts/groups.md)."""

from __future__ import annotations

import asyncio

import conveyor
from conveyor.backends.base import handed_lease_id, is_ahead
from conveyor.core.ids import new_message_id
from conveyor.types import DeadLetter, Settlement


async def test_deleting_a_groups_head_frees_the_group_and_wakes_a_waiting_pull(app: conveyor.App) -> None:
    queue = app.queue("orders")
    head = await queue.send("head", group="g", delay_seconds=3600)
    await queue.send("next", group="g")
    assert await queue.pull(batch_size=10) == []  # the delayed head holds its group
    waiting = asyncio.create_task(queue.pull(batch_size=10, wait=20.0))
    await asyncio.sleep(0.2)  # the pull is waiting (if not, it finds the message at once)
    assert await queue.delete(head) is True
    [pulled] = await waiting
    assert (pulled.body, pulled.group) == ("next", "g")


async def test_deleting_a_message_behind_the_head_takes_it_out_of_the_group(app: conveyor.App) -> None:
    queue = app.queue("orders")
    ids = await queue.send_batch([conveyor.SendRequest(n, group="g") for n in range(4)])
    [head] = await queue.pull(batch_size=10)
    assert head.body == 0
    assert await queue.delete(ids[1]) is True
    assert await queue.delete(ids[3]) is True  # the group's last: the group still goes on
    assert await queue.pull(batch_size=10) == []  # the head is still out
    await queue.ack(acks=[head.lease_id])
    [two] = await queue.pull(batch_size=10)
    assert two.body == 2
    await queue.ack(acks=[two.lease_id])
    assert (await queue.stats()).total == 0  # nothing left waiting behind a head that is gone
    await queue.send("later", group="g")  # the group is not stalled
    [later] = await queue.pull(batch_size=10)
    assert (later.body, later.group) == ("later", "g")


async def test_a_grouped_message_keeps_its_headers_through_lease_dead_letter_and_replay(
    app: conveyor.App,
) -> None:
    queue = app.queue("jobs")
    await app.create_queue("jobs-dlq")
    await queue.send_batch(
        [
            conveyor.SendRequest("a", headers={"tenant": "acme"}, group="g"),
            conveyor.SendRequest("b", group="g"),  # grouped, no headers
            conveyor.SendRequest("c", headers={"k": "v"}),  # headers, no group
        ]
    )
    pulled = await queue.pull(batch_size=10)
    assert sorted((m.body, m.group, dict(m.headers)) for m in pulled) == [
        ("a", "g", {"tenant": "acme"}),
        ("c", None, {"k": "v"}),
    ]
    [a] = [m for m in pulled if m.body == "a"]
    dead = DeadLetter(a.lease_id, new_message_id(), "boom", "jobs-dlq", 1)
    assert (await app.core.settle("jobs", Settlement(dead_letters=[dead]))).dead_lettered == 1
    [copy] = await app.queue("jobs-dlq").peek()
    assert (copy.body, copy.group, copy.headers["tenant"]) == ("a", "g", "acme")
    assert copy.headers["conveyor-dead-letter-error"] == "boom"
    [b] = await queue.pull(batch_size=10)  # the dead-lettered head freed its group
    assert (b.body, b.group, dict(b.headers)) == ("b", "g", {})
    assert await app.replay("jobs-dlq", to="jobs") == 1
    assert await queue.pull(batch_size=10) == []  # replayed behind b, at its group's end
    await queue.ack(acks=[b.lease_id])
    [replayed] = await queue.pull(batch_size=10)
    assert (replayed.body, replayed.group, replayed.headers["tenant"]) == ("a", "g", "acme")
    assert replayed.headers["conveyor-dead-letter-source-queue"] == "jobs"


async def test_a_pull_consumer_dead_lettering_a_head_frees_its_group(app: conveyor.App) -> None:
    queue = app.queue("jobs")
    await app.create_queue("jobs-dlq")
    await app.create_queue("jobs")
    await app.set_pull_consumer("jobs", conveyor.PullConsumer(max_retries=1, dead_letter_queue="jobs-dlq"))
    await queue.send_batch([conveyor.SendRequest(n, group="g", headers={"n": str(n)}) for n in range(2)])
    for attempt in (1, 2):
        [head] = await queue.pull(batch_size=10)
        assert (head.body, head.attempts) == (0, attempt)  # retried, the head keeps its place
        result = await queue.ack(retries=[head.lease_id])
    assert result.dead_letter_count == 1  # retried past max_retries
    [copy] = await app.queue("jobs-dlq").peek()
    assert (copy.body, copy.group, copy.headers["n"]) == (0, "g", "0")
    [next_one] = await queue.pull(batch_size=10)
    assert (next_one.body, next_one.group, dict(next_one.headers)) == (1, "g", {"n": "1"})


async def test_a_lease_ahead_takes_only_group_heads_with_their_headers(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch(
        [
            conveyor.SendRequest("g0", headers={"k": "v"}, group="g"),
            conveyor.SendRequest("g1", group="g"),
            conveyor.SendRequest("h0", group="h"),
            conveyor.SendRequest("h1", group="h"),
            "u0",
            "u1",
        ]
    )
    backend = await app.core.connected()
    # engines may lease the first ones handed and the rest ahead (Backend.lease_ahead): neither
    # takes a message behind its group's head
    leased = {m.body: m for m in await backend.lease_ahead("orders", 10, 30, hand_first=2)}
    assert sorted(leased) == [b'"g0"', b'"h0"', b'"u0"', b'"u1"']
    head = leased[b'"g0"']
    assert (head.group, head.headers, leased[b'"u0"'].group) == ("g", {"k": "v"}, None)
    assert await backend.lease_ahead("orders", 10, 30, hand_first=2) == []
    lease_id = head.lease_id
    if is_ahead(lease_id):
        assert await app.core.begin("orders", [lease_id]) == [True]
        lease_id = handed_lease_id(lease_id)
    assert (await queue.ack(acks=[lease_id])).ack_count == 1
    [after] = await backend.lease_ahead("orders", 10, 30, hand_first=1)
    assert (after.body, after.group) == (b'"g1"', "g")
