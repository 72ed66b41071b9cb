"""The producer and engine contract of docs/semantics.md, run unchanged on every engine in ENGINES
(tests/support/engines.py).

Time moves with `time_machine.advance`: instantly where the engine takes the app's (fake) clock,
by sleeping where it uses its server's clock, so delays here stay around a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import pytest

import conveyor
from conveyor.backends import from_url
from conveyor.backends.base import handed_lease_id, is_ahead
from conveyor.core.ids import new_message_id
from conveyor.errors import (
    BatchCountTooLarge,
    BatchTooLarge,
    BodyNotSerializable,
    ConveyorError,
    InvalidContentType,
    InvalidQueueName,
    LimitExceeded,
    MessageTooLarge,
    QueueAlreadyExists,
    QueueNotFound,
    QueuePaused,
)
from conveyor.types import DeadLetter, LeasedMessage, QueueSettings, Retry, Settlement, WorkerInfo
from tests.support.apps import AppFactory, TimeMachine
from tests.support.engines import EngineSetup

# -- sending and looking -----------------------------------------------------------------------


async def test_send_returns_an_id_and_peek_shows_the_message(app: conveyor.App) -> None:
    queue = app.queue("orders")
    before = dt.datetime.now(dt.UTC)
    message_id = await queue.send({"order": 1, "items": ["tea"]})
    [peeked] = await queue.peek()
    assert peeked.id == message_id
    assert peeked.body == {"order": 1, "items": ["tea"]}
    assert peeked.content_type == "json"
    assert peeked.attempts == 0
    assert not peeked.leased
    assert abs((peeked.timestamp - before).total_seconds()) < 60


async def test_send_batch_returns_ids_in_order_and_stores_every_message(app: conveyor.App) -> None:
    queue = app.queue("orders")
    ids = await queue.send_batch([{"n": n} for n in range(50)])
    assert len(ids) == len(set(ids)) == 50
    assert all(re.fullmatch("[0-9a-f]{32}", message_id) for message_id in ids)
    pulled = await queue.pull(batch_size=100)
    assert sorted(message.body["n"] for message in pulled) == list(range(50))
    assert {message.id for message in pulled} == set(ids)


async def test_content_types_round_trip(app: conveyor.App) -> None:
    queue = app.queue("mixed")
    await queue.send({"a": [1, 2.5, None, "é"]})
    await queue.send("plain text ✓", content_type="text")
    await queue.send(b"\x00\xffbinary", content_type="bytes")
    pulled = {message.content_type: message.body for message in await queue.pull(batch_size=10)}
    assert pulled == {"json": {"a": [1, 2.5, None, "é"]}, "text": "plain text ✓", "bytes": b"\x00\xffbinary"}


async def test_send_request_carries_its_own_delay_and_content_type(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("mixed")
    await queue.send_batch(
        ["now", conveyor.SendRequest("later", delay_seconds=1, content_type="text")],
        delay_seconds=0,
    )
    [ready] = await queue.pull(batch_size=10)
    assert ready.body == "now"
    await time_machine.advance(1.2)
    [later] = await queue.pull(batch_size=10)
    assert (later.body, later.content_type) == ("later", "text")


async def test_peek_does_not_lease(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    await queue.peek()
    await queue.peek()
    [pulled] = await queue.pull()
    assert pulled.attempts == 1


async def test_oldest_visible_message_is_delivered_first(app: conveyor.App) -> None:
    queue = app.queue("orders")
    for n in range(5):
        await queue.send({"n": n})
    pulled = await queue.pull(batch_size=2)
    assert [message.body["n"] for message in pulled] == [0, 1]


async def test_a_batch_is_delivered_in_the_order_it_was_sent(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch([{"n": n} for n in range(50)])
    pulled = await queue.pull(batch_size=50)
    assert [message.body["n"] for message in pulled] == list(range(50))


async def pull_three(queue: conveyor.Queue, in_one_batch: bool) -> list[object]:
    """The bodies' "n" of the next three messages: leased together, or one lease each."""
    if in_one_batch:
        return [message.body["n"] for message in await queue.pull(batch_size=3)]
    return [(await queue.pull(batch_size=1))[0].body["n"] for _ in range(3)]


@pytest.mark.parametrize("in_one_batch", [False, True], ids=["one-by-one", "one-batch"])
async def test_a_message_retried_without_delay_goes_behind_those_already_waiting(
    app: conveyor.App, time_machine: TimeMachine, in_one_batch: bool
) -> None:
    queue = app.queue("orders")
    await queue.send_batch([{"n": n} for n in range(3)])
    await time_machine.advance(0.01)
    [first] = await queue.pull(batch_size=1)
    await queue.ack(retries=[first.lease_id])
    assert await pull_three(queue, in_one_batch) == [1, 2, 0]


@pytest.mark.parametrize("in_one_batch", [False, True], ids=["one-by-one", "one-batch"])
async def test_a_delayed_message_that_came_due_goes_before_later_sends(
    app: conveyor.App, time_machine: TimeMachine, in_one_batch: bool
) -> None:
    queue = app.queue("orders")
    await queue.send({"n": "delayed"}, delay_seconds=0.5)
    await queue.send({"n": "early"})
    await time_machine.advance(0.8)
    await queue.send({"n": "late"})
    assert [message.body["n"] for message in await queue.peek()] == ["early", "delayed", "late"]
    assert await pull_three(queue, in_one_batch) == ["early", "delayed", "late"]


async def test_messages_come_due_in_order_of_when_they_are_due_whatever_order_they_were_sent_in(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send({"n": "longer"}, delay_seconds=0.6)
    await queue.send({"n": "shorter"}, delay_seconds=0.3)
    await queue.send({"n": "now"})
    await time_machine.advance(0.8)
    await queue.send({"n": "after"})
    assert [message.body["n"] for message in await queue.peek()] == ["now", "shorter", "longer", "after"]
    assert [message.body["n"] for message in await queue.pull(batch_size=4)] == [
        "now",
        "shorter",
        "longer",
        "after",
    ]


async def test_messages_moved_out_of_a_backlog_leave_the_rest_counted_and_in_order(app: conveyor.App) -> None:
    await app.create_queue("elsewhere")
    queue = app.queue("orders")
    await queue.send_batch([{"n": n} for n in range(6)])
    assert await app.replay("orders", to="elsewhere", limit=2) == 2
    await queue.send({"n": 6})
    stats = await queue.stats()
    assert (stats.backlog, stats.total) == (5, 5)
    assert [message.body["n"] for message in await queue.peek()] == [2, 3, 4, 5, 6]
    assert [message.body["n"] for message in await queue.pull(batch_size=10)] == [2, 3, 4, 5, 6]
    assert (await queue.stats()).backlog == 0
    assert await queue.pull(batch_size=10) == []
    assert [message.body["n"] for message in await app.queue("elsewhere").pull(batch_size=10)] == [0, 1]


async def test_concurrent_sends_are_all_stored_once(app: conveyor.App) -> None:
    queue = app.queue("orders")
    ids = await asyncio.gather(*(queue.send({"n": n}) for n in range(200)))
    assert len(set(ids)) == 200
    assert (await queue.stats()).backlog == 200


async def test_sends_one_after_the_other_and_all_at_once_store_the_same(app: conveyor.App) -> None:
    # A lone sender's sends are written one by one from its own task, concurrent ones together
    # (group commit): the same messages either way, dedup ids, headers, groups and delays included.
    requests: list[tuple[Any, dict[str, Any]]] = [
        ({"n": 0}, {}),
        ("text", {"content_type": "text", "headers": {"tenant": "a"}}),
        ({"n": 2}, {"dedup_id": "twice"}),
        ({"n": 3}, {"dedup_id": "twice"}),  # stored as the first one
        ({"n": 4}, {"group": "g"}),
        ({"n": 5}, {"group": "g"}),
        ({"n": 6}, {"delay_seconds": 3600}),
    ]

    async def stored(queue: conveyor.Queue, ids: list[str]) -> tuple[object, ...]:
        assert ids[3] == ids[2] and len(set(ids)) == 6
        stats = await queue.stats()
        peeked = {
            (repr(m.body), m.content_type, tuple(sorted(m.headers.items())), m.group, m.id in ids)
            for m in await queue.peek(10)
        }
        pulled = sorted(repr(m.body) for m in await queue.pull(batch_size=10))
        return (stats.backlog, stats.delayed, stats.in_flight), peeked, pulled

    one_by_one = app.queue("one-by-one")
    sequential = [await one_by_one.send(body, **options) for body, options in requests]
    at_once = app.queue("at-once")
    concurrent = await asyncio.gather(*(at_once.send(body, **options) for body, options in requests))
    alone = await stored(one_by_one, sequential)
    assert alone == await stored(at_once, list(concurrent))
    assert alone[2] == ["'text'", "{'n': 0}", "{'n': 2}", "{'n': 4}"]  # a group's head only; not the delayed


async def test_send_sync_works_without_an_event_loop(app: conveyor.App) -> None:
    queue = app.queue("orders")
    message_id = await asyncio.to_thread(queue.send_sync, {"from": "thread"})
    ids = await asyncio.to_thread(queue.send_batch_sync, [{"n": 1}, {"n": 2}])
    pulled = await queue.pull(batch_size=10)
    assert {message.id for message in pulled} == {message_id, *ids}


# -- leases, acks and retries ------------------------------------------------------------------


async def test_a_leased_message_is_invisible_until_acked(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [pulled] = await queue.pull()
    assert pulled.attempts == 1
    assert await queue.pull() == []
    stats = await queue.stats()
    assert (stats.backlog, stats.in_flight) == (0, 1)
    result = await queue.ack(acks=[pulled.lease_id])
    assert (result.ack_count, result.warnings) == (1, [])
    assert (await queue.stats()).total == 0


async def test_acking_a_settled_or_unknown_lease_is_a_warning_that_changes_nothing(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    await queue.send({"n": 2})
    [first] = await queue.pull(batch_size=1)
    await queue.ack(acks=[first.lease_id])
    result = await queue.ack(acks=[first.lease_id, "nonsense", f"{new_message_id()}.token"])
    assert result.ack_count == 0
    assert len(result.warnings) == 3
    assert (await queue.stats()).backlog == 1


async def test_retry_with_delay_hides_the_message_then_redelivers_it(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [pulled] = await queue.pull()
    result = await queue.ack(retries=[(pulled.lease_id, 1.0)])
    assert result.retry_count == 1
    stats = await queue.stats()
    assert (stats.backlog, stats.delayed, stats.in_flight) == (0, 1, 0)
    assert await queue.pull() == []
    await time_machine.advance(1.2)
    [again] = await queue.pull()
    assert (again.id, again.attempts) == (pulled.id, 2)


async def test_retry_without_delay_redelivers_at_once(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [pulled] = await queue.pull()
    await queue.ack(retries=[pulled.lease_id])
    [again] = await queue.pull()
    assert again.attempts == 2


async def test_an_expired_lease_returns_the_message_and_its_old_lease_goes_stale(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [first] = await queue.pull(visibility_timeout=0.5)
    await time_machine.advance(0.8)
    [second] = await queue.pull(visibility_timeout=30)
    assert (second.id, second.attempts) == (first.id, 2)
    stale = await queue.ack(acks=[first.lease_id])
    assert (stale.ack_count, len(stale.warnings)) == (0, 1)
    assert (await queue.stats()).in_flight == 1
    assert (await queue.ack(acks=[second.lease_id])).ack_count == 1


async def test_extending_a_lease_keeps_the_message_hidden(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [pulled] = await queue.pull(visibility_timeout=0.5)
    assert await app.core.extend_leases("orders", [pulled.lease_id, "unknown.lease"], 30) == 1
    await time_machine.advance(0.8)
    assert await queue.pull() == []
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 1


async def test_released_messages_come_back_at_once_as_if_never_delivered(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    [pulled] = await queue.pull()
    assert await app.core.release("orders", [pulled.lease_id]) == 1
    [again] = await queue.pull()
    assert again.attempts == 1
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 0


async def test_settle_writes_acks_retries_and_dead_letters_together(app: conveyor.App) -> None:
    queue = app.queue("work")
    await app.create_queue("work-dlq")
    await queue.send_batch([{"n": n} for n in range(4)])
    pulled = sorted(await queue.pull(batch_size=10), key=lambda message: message.body["n"])
    dead_id = new_message_id()
    result = await app.core.settle(
        "work",
        Settlement(
            acks=[pulled[0].lease_id],
            retries=[Retry(pulled[1].lease_id, 0)],
            dead_letters=[
                DeadLetter(pulled[2].lease_id, dead_id, "ValueError: boom", "work-dlq", 1),
                DeadLetter(pulled[3].lease_id, new_message_id(), "dropped", None, 1),
            ],
        ),
    )
    assert (result.acked, result.retried, result.dead_lettered, result.stale) == (1, 1, 2, [])
    [retried] = await queue.peek()
    assert retried.body == {"n": 1}
    [dead] = await app.queue("work-dlq").peek()
    assert dead.id == dead_id
    assert dead.body == {"n": 2}
    assert dead.content_type == "json"
    assert dead.dead_letter is not None
    assert dead.dead_letter.original_id == pulled[2].id
    assert dead.dead_letter.source_queue == "work"
    assert dead.dead_letter.attempts == 1
    assert dead.dead_letter.error == "ValueError: boom"
    assert (await queue.stats()).total == 1


async def test_settling_a_stale_lease_changes_nothing(app: conveyor.App, time_machine: TimeMachine) -> None:
    queue = app.queue("work")
    await app.create_queue("work-dlq")
    await queue.send({"n": 1})
    [pulled] = await queue.pull(visibility_timeout=0.5)
    await time_machine.advance(0.8)
    result = await app.core.settle(
        "work",
        Settlement(dead_letters=[DeadLetter(pulled.lease_id, new_message_id(), "late", "work-dlq", 1)]),
    )
    assert (result.dead_lettered, result.stale) == (0, [pulled.lease_id])
    assert (await app.queue("work-dlq").stats()).total == 0
    assert (await queue.stats()).backlog == 1


async def test_a_settle_of_one_pull_whose_leases_partly_expired_takes_only_the_live_ones(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    # one pull, one delivery: two of its leases are extended, the other two expire; a settle of
    # all four acks and retries the live ones and names the expired ones stale
    queue = app.queue("work")
    await queue.send_batch([{"n": n} for n in range(4)])
    pulled = sorted(await queue.pull(batch_size=10, visibility_timeout=0.5), key=lambda m: m.body["n"])
    assert (
        await queue.extend([pulled[0].lease_id, pulled[1].lease_id], visibility_timeout=30)
    ).extended_count == 2
    await time_machine.advance(0.8)
    result = await queue.ack(
        acks=[pulled[0].lease_id, pulled[2].lease_id], retries=[pulled[1].lease_id, pulled[3].lease_id]
    )
    assert (result.ack_count, result.retry_count) == (1, 1)
    assert sorted(result.stale) == sorted([pulled[2].lease_id, pulled[3].lease_id])
    again = await queue.pull(batch_size=10, visibility_timeout=30)
    assert sorted(m.body["n"] for m in again) == [1, 2, 3]


async def test_a_settle_counts_each_live_lease_once_and_names_every_other_stale(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("work")
    await queue.send_batch([{"n": n} for n in range(3)])

    def by_n(messages: list[conveyor.PulledMessage]) -> list[conveyor.PulledMessage]:
        return sorted(messages, key=lambda message: message.body["n"])

    old = by_n(await queue.pull(batch_size=10, visibility_timeout=0.5))
    await time_machine.advance(0.8)  # every first lease expires
    a, b, c = by_n(await queue.pull(batch_size=10, visibility_timeout=30))
    acks = [a.lease_id, a.lease_id, old[0].lease_id, old[2].lease_id, "not.a.lease", b.lease_id]
    result = await app.core.settle("work", Settlement(acks=acks, retries=[Retry(b.lease_id, 0)]))
    assert (result.acked, result.retried, result.dead_lettered) == (2, 0, 0)
    expected_stale = [a.lease_id, old[0].lease_id, old[2].lease_id, "not.a.lease", b.lease_id]
    assert sorted(result.stale) == sorted(expected_stale)
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (1, 1)  # c, still leased
    assert (await app.core.settle("work", Settlement(acks=[c.lease_id]))).acked == 1


# -- deliveries without an outcome: read-ahead leases, suspects (docs/semantics.md) ----------------


async def _lease_one(app: conveyor.App, *, handed: bool, visibility_timeout: float = 30) -> LeasedMessage:
    backend = await app.core.connected()
    [leased] = await backend.lease_many("orders", 1, visibility_timeout, handed=handed)
    return leased


async def test_a_read_ahead_lease_that_expires_gives_its_attempt_back(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.queue("orders").send({"n": 1})
    ahead = await _lease_one(app, handed=False, visibility_timeout=0.5)
    assert (ahead.attempts, ahead.lost) == (1, 0)
    await time_machine.advance(0.8)
    again = await _lease_one(app, handed=True)
    assert (again.id, again.attempts, again.lost) == (ahead.id, 1, 0)


async def test_a_released_read_ahead_lease_does_not_count(app: conveyor.App) -> None:
    await app.queue("orders").send({"n": 1})
    ahead = await _lease_one(app, handed=False)
    assert await app.core.release("orders", [ahead.lease_id]) == 1
    again = await _lease_one(app, handed=False)
    assert (again.attempts, again.lost) == (1, 0)


async def test_a_handed_lease_that_expires_counts_and_makes_a_suspect(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.queue("orders").send({"n": 1})
    handed = await _lease_one(app, handed=True, visibility_timeout=0.5)
    await time_machine.advance(0.8)
    again = await _lease_one(app, handed=False, visibility_timeout=0.5)
    assert (again.attempts, again.lost) == (2, 1)
    await time_machine.advance(0.8)  # a read-ahead expiry keeps the count and the suspicion
    third = await _lease_one(app, handed=True)
    assert (third.attempts, third.lost) == (2, 1)
    assert (await app.queue("orders").ack(acks=[handed.lease_id])).ack_count == 0


async def test_begin_hands_a_read_ahead_lease_over_so_that_its_expiry_counts(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.queue("orders").send({"n": 1})
    ahead = await _lease_one(app, handed=False, visibility_timeout=0.5)
    assert is_ahead(ahead.lease_id)
    assert await app.core.begin("orders", [ahead.lease_id, "not-a-lease"]) == [True, False]
    assert await app.core.begin("orders", [ahead.lease_id]) == [False]  # its token changed
    handed = handed_lease_id(ahead.lease_id)
    assert not is_ahead(handed)
    assert await app.core.extend_leases("orders", [handed], 0.5) == 1
    await time_machine.advance(0.8)
    assert await app.core.begin("orders", [handed]) == [False]  # expired
    again = await _lease_one(app, handed=True)
    assert (again.attempts, again.lost) == (2, 1)


async def test_a_begin_of_one_lease_whose_leases_partly_expired_hands_only_the_live_ones(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.queue("orders").send_batch([{"n": n} for n in range(3)])
    backend = await app.core.connected()
    leased = await backend.lease_many("orders", 3, 0.5, handed=False)
    assert len(leased) == 3 and all(is_ahead(m.lease_id) for m in leased)
    assert await app.core.extend_leases("orders", [leased[0].lease_id, leased[2].lease_id], 30) == 2
    await time_machine.advance(0.8)  # the middle one expired
    ids = [m.lease_id for m in leased]
    assert await app.core.begin("orders", ids) == [True, False, True]
    handed = [handed_lease_id(leased[0].lease_id), handed_lease_id(leased[2].lease_id)]
    assert (await app.queue("orders").ack(acks=handed)).ack_count == 2


async def test_a_lease_ahead_hands_at_most_the_first_non_suspects_asked_and_their_ids_say_so(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    # Backend.lease_ahead: an engine may hand the first `hand_first` non-suspects at the lease
    # (SQLite does), or none; never a suspect; the lease id's kind is what an expiry counts by.
    await app.queue("orders").send({"n": 0})
    await _lease_one(app, handed=True, visibility_timeout=0.5)
    await time_machine.advance(0.8)  # n=0 is a suspect from now on
    await app.queue("orders").send_batch([{"n": n} for n in range(1, 6)])
    backend = await app.core.connected()
    leased = await backend.lease_ahead("orders", 10, 0.5, hand_first=2)
    assert len(leased) == 6
    fresh = [m for m in leased if m.lost == 0]
    handed = [m for m in leased if not is_ahead(m.lease_id)]
    assert handed in ([], fresh[:2])
    assert all(m.lost == 0 for m in handed)
    await time_machine.advance(0.8)  # every lease expires: a handed one counts, an ahead one not
    again = {m.id: m for m in await backend.lease_many("orders", 10, 30, handed=True)}
    for message in fresh:
        counted = message in handed
        assert (again[message.id].attempts, again[message.id].lost) == (1 + counted, int(counted))


async def test_a_lease_ahead_that_takes_fewer_than_it_would_hand_hands_none(app: conveyor.App) -> None:
    await app.queue("orders").send_batch([{"n": n} for n in range(3)])
    backend = await app.core.connected()
    leased = await backend.lease_ahead("orders", 10, 30, hand_first=4)
    assert len(leased) == 3
    assert all(is_ahead(m.lease_id) for m in leased)


async def test_a_begun_lease_settles_under_its_handed_id(app: conveyor.App) -> None:
    await app.queue("orders").send({"n": 1})
    ahead = await _lease_one(app, handed=False)
    assert await app.core.begin("orders", [ahead.lease_id]) == [True]
    stale = await app.queue("orders").ack(acks=[ahead.lease_id])
    assert stale.ack_count == 0
    assert (await app.queue("orders").ack(acks=[handed_lease_id(ahead.lease_id)])).ack_count == 1
    assert (await app.queue("orders").stats()).total == 0


async def test_a_retry_clears_the_suspicion_and_a_release_keeps_it(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.queue("orders").send({"n": 1})
    await _lease_one(app, handed=True, visibility_timeout=0.5)
    await time_machine.advance(0.8)
    suspect = await _lease_one(app, handed=True)
    assert (suspect.attempts, suspect.lost) == (2, 1)
    assert await app.core.release("orders", [suspect.lease_id]) == 1
    kept = await _lease_one(app, handed=True)
    assert (kept.attempts, kept.lost) == (2, 1)
    await app.queue("orders").ack(retries=[kept.lease_id])
    cleared = await _lease_one(app, handed=True)
    assert (cleared.attempts, cleared.lost) == (3, 0)


async def test_lost_deliveries_add_up_until_an_outcome(app: conveyor.App, time_machine: TimeMachine) -> None:
    await app.queue("orders").send({"n": 1})
    for _ in range(3):
        await _lease_one(app, handed=True, visibility_timeout=0.3)
        await time_machine.advance(0.5)
    leased = await _lease_one(app, handed=True)
    assert (leased.attempts, leased.lost) == (4, 3)
    assert [m.attempts for m in await app.queue("orders").peek()] == [4]


# -- delays, pause, purge, stats ------------------------------------------------------------------


async def test_a_delayed_message_becomes_visible_on_time(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("later")
    await queue.send({"n": 1}, delay_seconds=1)
    stats = await queue.stats()
    assert (stats.backlog, stats.delayed) == (0, 1)
    assert await queue.pull() == []
    await time_machine.advance(1.2)
    [pulled] = await queue.pull()
    assert pulled.body == {"n": 1}


async def test_a_queue_delivery_delay_applies_unless_the_send_overrides_it(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.create_queue("slow", delivery_delay=1)
    queue = app.queue("slow")
    await queue.send({"n": "default"})
    await queue.send({"n": "now"}, delay_seconds=0)
    [immediate] = await queue.pull(batch_size=10)
    assert immediate.body == {"n": "now"}
    await time_machine.advance(1.2)
    [delayed] = await queue.pull(batch_size=10)
    assert delayed.body == {"n": "default"}


async def test_a_paused_queue_accepts_sends_and_delivers_nothing_until_resumed(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send({"n": 1})
    await queue.pause()
    await queue.send({"n": 2})
    assert (await queue.stats()).paused
    assert await app.backend.lease_many("orders", 10, 30) == []
    with pytest.raises(QueuePaused):
        await queue.pull()
    await queue.resume()
    assert not (await queue.stats()).paused
    assert len(await queue.pull(batch_size=10)) == 2


async def test_purge_deletes_every_message(app: conveyor.App) -> None:
    queue = app.queue("orders")
    await queue.send_batch([{"n": n} for n in range(10)])
    await queue.send({"n": "delayed"}, delay_seconds=60)
    await queue.pull(batch_size=3)
    assert await queue.purge() == 11
    assert (await queue.stats()).total == 0


async def test_stats_count_ready_delayed_and_in_flight(app: conveyor.App, time_machine: TimeMachine) -> None:
    queue = app.queue("orders")
    await queue.send_batch([{"n": n} for n in range(5)])
    await queue.send({"n": "later"}, delay_seconds=60)
    await queue.pull(batch_size=2)
    await time_machine.advance(0.2)
    stats = await queue.stats()
    assert (stats.queue, stats.backlog, stats.delayed, stats.in_flight, stats.total) == ("orders", 3, 1, 2, 6)
    assert stats.bytes >= 6 * len(b'{"n":0}')
    assert stats.oldest_age_seconds >= 0.1
    assert not stats.paused


async def test_stats_of_an_empty_queue(app: conveyor.App) -> None:
    await app.create_queue("empty")
    stats = await app.queue("empty").stats()
    assert (stats.total, stats.bytes, stats.oldest_age_seconds) == (0, 0, 0)


# -- retention ----------------------------------------------------------------------------------


async def test_messages_past_retention_are_swept(app: conveyor.App, time_machine: TimeMachine) -> None:
    await app.create_queue("short", retention_seconds=1)
    await app.create_queue("long")
    await app.queue("short").send({"n": "old"})
    await app.queue("long").send({"n": "kept"})
    await time_machine.advance(1.5)
    await app.queue("short").send({"n": "young"})
    assert await app.sweep() == 1
    assert [message.body for message in await app.queue("short").peek()] == [{"n": "young"}]
    assert (await app.queue("short").stats()).backlog == 1
    assert [message.body for message in await app.queue("short").pull(batch_size=10)] == [{"n": "young"}]
    assert (await app.queue("long").stats()).total == 1


# -- dead-letter replay ----------------------------------------------------------------------------


async def _dead_letter_all(app: conveyor.App, source: str, dlq: str) -> list[str]:
    pulled = await app.queue(source).pull(batch_size=100)
    await app.core.settle(
        source,
        Settlement(
            dead_letters=[DeadLetter(m.lease_id, new_message_id(), "boom", dlq, m.attempts) for m in pulled]
        ),
    )
    return [message.id for message in pulled]


async def test_replay_moves_dead_letters_back_with_body_content_type_and_fresh_attempts(
    app: conveyor.App,
) -> None:
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send({"n": 1})
    await app.queue("jobs").send("text body", content_type="text")
    await _dead_letter_all(app, "jobs", "jobs-dlq")
    assert await app.replay("jobs-dlq", to="jobs") == 2
    assert (await app.queue("jobs-dlq").stats()).total == 0
    replayed = await app.queue("jobs").pull(batch_size=10)
    assert sorted((m.content_type, str(m.body)) for m in replayed) == [
        ("json", "{'n': 1}"),
        ("text", "text body"),
    ]
    assert all(message.attempts == 1 and message.dead_letter is None for message in replayed)


async def test_replay_respects_its_limit_and_leaves_leased_dead_letters(app: conveyor.App) -> None:
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send_batch([{"n": n} for n in range(5)])
    await _dead_letter_all(app, "jobs", "jobs-dlq")
    await app.queue("jobs-dlq").pull(batch_size=1)  # someone is inspecting one of them
    assert await app.replay("jobs-dlq", to="jobs", limit=2) == 2
    assert await app.replay("jobs-dlq", to="jobs") == 2
    stats = await app.queue("jobs-dlq").stats()
    assert (stats.backlog, stats.in_flight) == (0, 1)


async def test_replay_from_a_missing_queue_is_an_error(app: conveyor.App) -> None:
    with pytest.raises(QueueNotFound):
        await app.replay("no-such-dlq", to="jobs")


# -- queue management ---------------------------------------------------------------------------


async def test_queue_lifecycle(app: conveyor.App) -> None:
    info = await app.create_queue("a", delivery_delay=5, retention_seconds=3600)
    assert (info.name, info.settings, info.paused) == ("a", QueueSettings(5, 3600), False)
    with pytest.raises(QueueAlreadyExists):
        await app.create_queue("a")
    assert (await app.create_queue("a", exist_ok=True)).settings.delivery_delay == 5
    await app.create_queue("b")
    assert [queue.name for queue in await app.list_queues()] == ["a", "b"]
    updated = await app.update_queue("a", retention_seconds=7200)
    assert updated.settings == QueueSettings(5, 7200)
    assert (await app.get_queue("a")).settings == QueueSettings(5, 7200)
    await app.queue("a").send({"n": 1})
    assert await app.delete_queue("a") is True
    assert await app.delete_queue("a") is False
    with pytest.raises(QueueNotFound):
        await app.get_queue("a")
    with pytest.raises(QueueNotFound):
        await app.update_queue("a", delivery_delay=1)
    assert [queue.name for queue in await app.list_queues()] == ["b"]
    await app.create_queue("a")
    assert (await app.queue("a").stats()).total == 0  # the old messages went with the old queue


async def test_queues_are_created_on_first_send(app: conveyor.App) -> None:
    await app.queue("fresh").send({"n": 1})
    info = await app.get_queue("fresh")
    assert info.settings == QueueSettings()


async def test_with_auto_create_off_an_unknown_queue_is_an_error(make_app: AppFactory) -> None:
    app = await make_app(auto_create=False)
    with pytest.raises(QueueNotFound) as raised:
        await app.queue("unknown").send({"n": 1})
    assert raised.value.queue == "unknown"
    with pytest.raises(QueueNotFound):
        await app.queue("unknown").send_batch([{"n": 1}])
    assert await app.list_queues() == []
    await app.create_queue("unknown")
    await app.queue("unknown").send({"n": 1})
    assert (await app.queue("unknown").stats()).backlog == 1


async def test_send_many_across_queues_is_all_or_nothing(app: conveyor.App) -> None:
    await app.create_queue("exists")
    from conveyor.types import OutgoingMessage

    messages = [
        OutgoingMessage("exists", new_message_id(), b"{}", "json"),
        OutgoingMessage("missing", new_message_id(), b"{}", "json"),
    ]
    with pytest.raises(QueueNotFound):
        await app.backend.send_many(messages)
    assert (await app.queue("exists").stats()).total == 0


# -- bad input gets a clear error and changes nothing ----------------------------------------------

BAD_SENDS = [
    pytest.param(
        lambda q: q.send("x" * 128_001, content_type="text"), MessageTooLarge, id="message-too-large"
    ),
    pytest.param(lambda q: q.send({"n": 1}, delay_seconds=86_401), LimitExceeded, id="delay-too-long"),
    pytest.param(lambda q: q.send({"n": 1}, delay_seconds=-1), LimitExceeded, id="negative-delay"),
    pytest.param(lambda q: q.send({"n": object()}), BodyNotSerializable, id="not-serialisable"),
    pytest.param(lambda q: q.send(b"raw"), BodyNotSerializable, id="bytes-as-json"),
    pytest.param(
        lambda q: q.send({"n": 1}, content_type="pickle"), InvalidContentType, id="bad-content-type"
    ),
    pytest.param(
        lambda q: q.send_batch([{"n": n} for n in range(101)]), BatchCountTooLarge, id="101-messages"
    ),
    pytest.param(
        lambda q: q.send_batch(["x" * 100_000 for _ in range(3)], delay_seconds=0),
        BatchTooLarge,
        id="batch-too-large",
    ),
    pytest.param(
        lambda q: q.send_batch([{"n": 1}, {"n": object()}]), BodyNotSerializable, id="one-bad-body-in-a-batch"
    ),
    pytest.param(
        lambda q: q.send_batch([{"n": 1}, conveyor.SendRequest({"n": 2}, delay_seconds=10**6)]),
        LimitExceeded,
        id="one-bad-delay-in-a-batch",
    ),
]


@pytest.mark.parametrize(("send", "error"), BAD_SENDS)
async def test_bad_sends_raise_clear_errors_and_store_nothing(
    app: conveyor.App, send: object, error: type[Exception]
) -> None:
    queue = app.queue("strict")
    await app.create_queue("strict")
    with pytest.raises(error) as raised:
        await send(queue)  # type: ignore[operator]
    assert isinstance(raised.value, ConveyorError)
    assert raised.value.code
    assert str(raised.value)
    assert (await queue.stats()).total == 0


def test_limit_errors_are_value_errors_naming_the_limit() -> None:
    assert issubclass(MessageTooLarge, ValueError)
    assert issubclass(BodyNotSerializable, TypeError)
    with pytest.raises(LimitExceeded, match="max_batch_size"):
        conveyor.App("memory://").consumer("q", max_batch_size=101)


@pytest.mark.parametrize("name", ["", "has space", "x" * 64, "dots.not.allowed", "ünïcode"])
async def test_invalid_queue_names_are_refused(app: conveyor.App, name: str) -> None:
    with pytest.raises(InvalidQueueName):
        app.queue(name)
    with pytest.raises(InvalidQueueName):
        await app.create_queue(name)
    assert await app.list_queues() == []


async def test_out_of_range_queue_settings_are_refused(app: conveyor.App) -> None:
    with pytest.raises(LimitExceeded, match="retention"):
        await app.create_queue("q", retention_seconds=10**9)
    with pytest.raises(LimitExceeded, match="delivery_delay"):
        await app.create_queue("q", delivery_delay=-5)
    assert await app.list_queues() == []


async def test_default_limits_refuse_retention_under_a_minute() -> None:
    async with conveyor.App("memory://") as app:
        with pytest.raises(LimitExceeded, match="retention"):
            await app.create_queue("q", retention_seconds=30)


# -- durable topic subscriptions (the storage half; fan-out is tested with topics) ----------------


async def test_subscriptions_are_stored_replaced_listed_and_removed(app: conveyor.App) -> None:
    backend = app.backend
    await backend.add_subscription("orders", "kitchen", ["FOOD"])
    await backend.add_subscription("orders", "bar", ["DRINK", "SNACK"])
    await backend.add_subscription("payments", "ledger", None)
    replaced = await backend.add_subscription("orders", "kitchen", ["FOOD", "DESSERT"])
    assert replaced.types == ("FOOD", "DESSERT")
    orders = await backend.list_subscriptions("orders")
    assert [(s.queue, s.types) for s in orders] == [
        ("bar", ("DRINK", "SNACK")),
        ("kitchen", ("FOOD", "DESSERT")),
    ]
    assert [s.topic for s in await backend.list_subscriptions()] == ["orders", "orders", "payments"]
    assert await backend.remove_subscription("orders", "bar") is True
    assert await backend.remove_subscription("orders", "bar") is False
    assert [s.queue for s in await backend.list_subscriptions("orders")] == ["kitchen"]


async def test_deleting_a_queue_removes_its_subscriptions(app: conveyor.App) -> None:
    await app.create_queue("kitchen")
    await app.backend.add_subscription("orders", "kitchen", None)
    await app.delete_queue("kitchen")
    assert await app.backend.list_subscriptions("orders") == []


# -- several apps on one storage ---------------------------------------------------------------


async def test_two_apps_on_one_storage_share_queues(make_app: AppFactory, engine: EngineSetup) -> None:
    if engine.name == "memory":
        pytest.skip("each memory:// App has its own store")
    producer, consumer = await make_app(), await make_app()
    await producer.queue("shared").send({"n": 1})
    [pulled] = await consumer.queue("shared").pull()
    assert pulled.body == {"n": 1}
    assert await producer.queue("shared").pull() == []


async def test_wait_for_messages_wakes_on_a_send_from_this_process(app: conveyor.App) -> None:
    await app.create_queue("wake")
    waiter = asyncio.create_task(app.backend.wait_for_messages("wake", 60))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await app.queue("wake").send({"n": 1})
    async with asyncio.timeout(10):
        await waiter


async def test_wait_for_messages_returns_at_its_timeout(app: conveyor.App, time_machine: TimeMachine) -> None:
    await app.create_queue("idle")
    waiter = asyncio.create_task(app.backend.wait_for_messages("idle", 0.1))
    await asyncio.sleep(0.05)  # let the waiter start its clock
    await time_machine.advance(0.2)
    async with asyncio.timeout(10):
        await waiter


async def test_wait_and_lease_leases_what_a_send_wakes_it_for(app: conveyor.App) -> None:
    await app.create_queue("wake")
    waiter = asyncio.create_task(app.backend.wait_and_lease("wake", 10, 30.0, 60))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    message_id = await app.queue("wake").send({"n": 1})
    async with asyncio.timeout(10):
        leased = await waiter
    assert [(m.id, m.body, m.attempts) for m in leased] == [(message_id, b'{"n":1}', 1)]
    assert await app.backend.lease_many("wake", 10, 30.0) == []  # it holds the lease


async def test_wait_and_lease_leases_at_its_timeout_too(app: conveyor.App, time_machine: TimeMachine) -> None:
    await app.create_queue("idle")
    waiter = asyncio.create_task(app.backend.wait_and_lease("idle", 10, 30.0, 0.1))
    await asyncio.sleep(0.05)
    await time_machine.advance(0.2)
    async with asyncio.timeout(10):
        assert await waiter == []


async def test_a_cancelled_wait_and_lease_takes_nothing(app: conveyor.App) -> None:
    await app.create_queue("stop")
    waiter = asyncio.create_task(app.backend.wait_and_lease("stop", 10, 30.0, 60))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await app.queue("stop").send({"n": 1})
    leased = await app.backend.lease_many("stop", 10, 30.0)
    assert [(m.body, m.attempts) for m in leased] == [(b'{"n":1}', 1)]


def test_an_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(ConveyorError, match="scheme"):
        from_url("kafka://localhost")


def _worker(worker_id: str, seen_at: float, queues: tuple[str, ...] = ("jobs",)) -> WorkerInfo:
    return WorkerInfo(worker_id, "host-a", 4242, queues, 10, seen_at - 60, seen_at)


async def test_worker_heartbeats_are_kept_replaced_listed_by_age_and_forgotten(
    app: conveyor.App, make_app: AppFactory, engine: EngineSetup
) -> None:
    backend = app.backend
    await backend.record_worker(_worker("w1", 1_000.0), ttl=15)
    await backend.record_worker(_worker("w2", 1_004.0, ("a", "b")), ttl=15)
    # another App on the same storage sees them (each memory:// App has its own store)
    other = backend if engine.name == "memory" else (await make_app()).backend
    assert await other.list_workers(since=990.0) == [
        _worker("w1", 1_000.0),
        _worker("w2", 1_004.0, ("a", "b")),
    ]
    assert [w.id for w in await other.list_workers(since=1_002.0)] == ["w2"]
    # a heartbeat replaces the last one
    await backend.record_worker(_worker("w1", 1_010.0, ("c",)), ttl=15)
    assert await other.list_workers(since=1_005.0) == [_worker("w1", 1_010.0, ("c",))]
    # a stopped worker is forgotten; forgetting an unknown one changes nothing
    await other.forget_worker("w1")
    await other.forget_worker("nobody")
    assert [w.id for w in await backend.list_workers(since=0.0)] == ["w2"]
    # a write deletes heartbeats older than its ttl
    await backend.record_worker(_worker("w3", 1_100.0), ttl=15)
    assert [w.id for w in await backend.list_workers(since=0.0)] == ["w3"]
