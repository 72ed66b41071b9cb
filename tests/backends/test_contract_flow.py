"""Flow control, run unchanged on every engine in ENGINES (tests/support/engines.py): long-poll
pulls and lease extension (issue 32)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

import conveyor
from conveyor.errors import LimitExceeded, QueueFull, QueuePaused
from tests.support.apps import AppFactory, TimeMachine
from tests.support.engines import EngineSetup

# -- long-poll pulls -----------------------------------------------------------------------------


async def test_a_long_poll_pull_returns_the_message_a_send_makes_visible(app: conveyor.App) -> None:
    queue = app.queue("poll")
    await app.create_queue("poll")
    pulling = asyncio.create_task(queue.pull(batch_size=10, wait=20))
    await asyncio.sleep(0.1)
    assert not pulling.done()
    message_id = await queue.send({"n": 1})
    async with asyncio.timeout(10):  # far sooner than the 20 s the pull may wait
        [pulled] = await pulling
    assert (pulled.id, pulled.body, pulled.attempts) == (message_id, {"n": 1}, 1)
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 1


async def test_a_long_poll_pull_answers_empty_at_its_deadline(app: conveyor.App) -> None:
    await app.create_queue("idle")
    async with asyncio.timeout(10):
        assert await app.queue("idle").pull(wait=0.3) == []


async def test_a_long_poll_pull_takes_what_is_already_there_without_waiting(app: conveyor.App) -> None:
    queue = app.queue("ready")
    await queue.send_batch([{"n": 1}, {"n": 2}])
    async with asyncio.timeout(10):
        pulled = await queue.pull(batch_size=10, wait=20)
    assert sorted(m.body["n"] for m in pulled) == [1, 2]


async def test_a_long_poll_pull_on_a_paused_queue_raises_at_once(app: conveyor.App) -> None:
    queue = app.queue("paused")
    await app.create_queue("paused")
    await queue.pause()
    async with asyncio.timeout(10):
        with pytest.raises(QueuePaused):
            await queue.pull(wait=20)


async def test_a_cancelled_long_poll_pull_leases_nothing(app: conveyor.App) -> None:
    queue = app.queue("cancel")
    await app.create_queue("cancel")
    pulling = asyncio.create_task(queue.pull(wait=20))
    await asyncio.sleep(0.1)
    pulling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pulling
    await queue.send({"n": 1})
    [pulled] = await queue.pull()
    assert pulled.attempts == 1


@pytest.mark.parametrize("wait", [-1, 20.001, float("nan"), 10**400])
async def test_a_wait_outside_its_limit_is_refused(app: conveyor.App, wait: float) -> None:
    with pytest.raises(LimitExceeded, match="wait"):
        await app.queue("poll").pull(wait=wait)


SEND_ONE = """
import asyncio, sys, time
import conveyor

async def main(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.queue("shared").send("from another process")
        print(time.time(), flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_long_poll_pull_is_woken_by_a_send_from_another_process(
    make_app: AppFactory, url: str, engine: EngineSetup
) -> None:
    if engine.name == "memory":
        pytest.skip("a memory:// store lives in one process")
    app = await make_app(real_clock=True)
    await app.create_queue("shared")
    started = time.monotonic()
    pulling = asyncio.create_task(app.queue("shared").pull(wait=20))
    await asyncio.sleep(0.2)
    assert not pulling.done()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SEND_ONE, url, cwd=os.getcwd(), stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(25):
        [message] = await pulling
        woken_at = time.time()
        sent_at = float((await sender.communicate())[0])
    assert message.body == "from another process"
    # woken by the engine, not at the deadline: tolerant of a loaded machine (the wake-up
    # latency itself is printed, and measured in conveyor/bench)
    assert time.monotonic() - started < 15
    print(f"{engine.name}: woken {1000 * (woken_at - sent_at):.1f} ms after the send returned")


# -- lease extension ----------------------------------------------------------------------------


async def test_an_extended_lease_outlives_its_first_timeout(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("slow")
    await queue.send({"n": 1})
    [pulled] = await queue.pull(visibility_timeout=0.5)
    result = await queue.extend([pulled.lease_id], visibility_timeout=30)
    assert (result.extended_count, result.warnings) == (1, [])
    await time_machine.advance(0.8)
    assert await queue.pull() == []  # not redelivered
    assert (await queue.stats()).in_flight == 1
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 1


async def test_extending_an_expired_or_unknown_lease_is_a_warning(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("late")
    await queue.send_batch([{"n": 1}, {"n": 2}])
    [first] = await queue.pull(batch_size=1, visibility_timeout=0.5)
    [second] = await queue.pull(batch_size=1, visibility_timeout=30)
    await time_machine.advance(0.8)
    result = await queue.extend([first.lease_id, second.lease_id, "unknown.lease"], visibility_timeout=30)
    assert result.extended_count == 1
    assert result.stale == [first.lease_id, "unknown.lease"]
    assert len(result.warnings) == 2 and "expired" in result.warnings[0]
    [again] = await queue.pull()  # the expired lease's message came back; extending it changed nothing
    assert (again.id, again.attempts) == (first.id, 2)


async def test_extend_refuses_a_timeout_outside_its_limit_and_changes_nothing(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("bad")
    await queue.send({"n": 1})
    [pulled] = await queue.pull(visibility_timeout=0.5)
    with pytest.raises(LimitExceeded, match="visibility_timeout"):
        await queue.extend([pulled.lease_id], visibility_timeout=43_201)
    await time_machine.advance(0.8)
    [again] = await queue.pull()
    assert again.id == pulled.id


# -- bounded backlog ----------------------------------------------------------------------------


async def test_a_send_past_max_backlog_messages_is_queue_full_and_stores_nothing(app: conveyor.App) -> None:
    await app.create_queue("bounded", max_backlog_messages=3)
    queue = app.queue("bounded")
    kept = await queue.send_batch([{"n": 1}, {"n": 2}])
    with pytest.raises(QueueFull) as raised:
        await queue.send_batch([{"n": 3}, {"n": 4}])
    assert isinstance(raised.value, ValueError)
    assert (raised.value.limit, raised.value.backlog, raised.value.maximum) == ("max_backlog_messages", 2, 3)
    assert "max_backlog_messages" in str(raised.value) and "holds 2" in str(raised.value)
    assert sorted(m.id for m in await queue.peek(10)) == sorted(kept)
    kept.append(await queue.send({"n": 3}))  # what fits still goes in
    with pytest.raises(QueueFull):
        await queue.send({"n": 4})
    assert (await queue.stats()).total == 3


async def test_a_deduplicated_message_takes_no_room_in_a_bounded_queue(app: conveyor.App) -> None:
    await app.create_queue("bounded", max_backlog_messages=2)
    queue = app.queue("bounded")
    first = await queue.send({"n": 1}, dedup_id="one")
    # the second message fits only because the batch's copies of "one" store nothing
    ids = await queue.send_batch(
        [
            conveyor.SendRequest({"n": 1}, dedup_id="one"),
            conveyor.SendRequest({"n": 2}, dedup_id="two"),
            conveyor.SendRequest({"n": 2}, dedup_id="two"),
        ]
    )
    assert ids[0] == first and ids[2] == ids[1] != first
    # full now: a send whose dedup id is held still answers with the first id, not QueueFull
    assert await queue.send({"n": 1}, dedup_id="one") == first
    with pytest.raises(QueueFull):
        await queue.send({"n": 3}, dedup_id="three")
    assert sorted(m.id for m in await queue.peek(10)) == sorted({first, ids[1]})


async def test_a_send_refused_as_full_claims_no_dedup_id(app: conveyor.App) -> None:
    await app.create_queue("bounded", max_backlog_messages=1)
    queue = app.queue("bounded")
    await queue.send({"n": 1})
    with pytest.raises(QueueFull):
        await queue.send_batch([conveyor.SendRequest({"n": 2}, dedup_id="two"), {"n": 3}])
    [pulled] = await queue.pull()
    await queue.ack([pulled.lease_id])
    stored = await queue.send({"n": 2}, dedup_id="two")  # stored now: the refusal held nothing
    [kept] = await queue.peek(10)
    assert (kept.id, kept.body) == (stored, {"n": 2})


async def test_leased_and_delayed_messages_count_until_acked(app: conveyor.App) -> None:
    await app.create_queue("bounded", max_backlog_messages=2)
    queue = app.queue("bounded")
    await queue.send({"n": 1})
    await queue.send({"n": 2}, delay_seconds=600)
    [pulled] = await queue.pull()
    with pytest.raises(QueueFull):
        await queue.send({"n": 3})
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 1
    await queue.send({"n": 3})  # the ack made room
    assert (await queue.stats()).total == 2


async def test_a_send_past_max_backlog_bytes_is_queue_full(app: conveyor.App) -> None:
    await app.create_queue("bytes", max_backlog_bytes=25)
    queue = app.queue("bytes")
    await queue.send("x" * 10, content_type="text")
    await queue.send("y" * 10, content_type="text")
    with pytest.raises(QueueFull) as raised:
        await queue.send("z" * 10, content_type="text")
    assert (raised.value.limit, raised.value.backlog, raised.value.maximum) == ("max_backlog_bytes", 20, 25)
    await queue.send("z" * 5, content_type="text")
    assert (await queue.stats()).total == 3


async def test_the_bytes_a_message_held_are_free_again_once_it_is_gone(app: conveyor.App) -> None:
    await app.create_queue("freed", max_backlog_bytes=25)
    queue = app.queue("freed")
    await queue.send("a" * 10, content_type="text")
    deleted = await queue.send("b" * 10, content_type="text")
    [pulled] = await queue.pull(batch_size=1)
    assert (await queue.ack(acks=[pulled.lease_id])).ack_count == 1
    assert await queue.delete(deleted)
    await queue.send("c" * 10, content_type="text")  # the ack and the delete made room
    await queue.send("d" * 10, content_type="text")
    with pytest.raises(QueueFull) as raised:
        await queue.send("e" * 10, content_type="text")
    assert (raised.value.limit, raised.value.backlog) == ("max_backlog_bytes", 20)
    assert await queue.purge() == 2
    await queue.send("f" * 20, content_type="text")  # the purge freed it all
    with pytest.raises(QueueFull) as raised:
        await queue.send("g" * 10, content_type="text")
    assert raised.value.backlog == 20


async def test_only_the_group_committed_sends_that_do_not_fit_fail(app: conveyor.App) -> None:
    await app.create_queue("room", max_backlog_messages=5)
    queue = app.queue("room")
    results = await asyncio.gather(*(queue.send({"n": n}) for n in range(8)), return_exceptions=True)
    sent = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert len(sent) == 5 and len(refused) == 3
    assert all(isinstance(error, QueueFull) for error in refused)
    assert sorted(m.id for m in await queue.peek(10)) == sorted(sent)


async def test_concurrent_senders_racing_for_the_last_room_never_overfill(
    make_app: AppFactory, engine: EngineSetup
) -> None:
    apps = [await make_app() for _ in range(1 if engine.name == "memory" else 3)]
    await apps[0].create_queue("race", max_backlog_messages=10)
    await apps[0].queue("race").send_batch([{"n": n} for n in range(7)])  # room for 3 more

    async def one(app: conveyor.App, n: int) -> str | BaseException:
        try:
            if n % 3 == 0:
                return (await app.queue("race").send_batch([{"n": n}, {"n": n}]))[0]
            return await app.queue("race").send({"n": n})
        except QueueFull as exc:
            return exc

    results = await asyncio.gather(*(one(apps[n % len(apps)], n) for n in range(30)))
    assert any(isinstance(r, QueueFull) for r in results)
    stats = await apps[0].queue("race").stats()
    assert 9 <= stats.total <= 10  # a batch of two may not fit the last single place
    peeked = await apps[0].queue("race").peek(100)
    assert len(peeked) == stats.total


async def test_backlog_limits_are_stored_updated_and_removed(app: conveyor.App) -> None:
    info = await app.create_queue("limits", max_backlog_messages=100, max_backlog_bytes=10_000)
    assert (info.settings.max_backlog_messages, info.settings.max_backlog_bytes) == (100, 10_000)
    info = await app.get_queue("limits")
    assert (info.settings.max_backlog_messages, info.settings.max_backlog_bytes) == (100, 10_000)
    info = await app.update_queue("limits", max_backlog_messages=1)
    assert (info.settings.max_backlog_messages, info.settings.max_backlog_bytes) == (1, 10_000)
    await app.queue("limits").send({"n": 1})
    with pytest.raises(QueueFull):
        await app.queue("limits").send({"n": 2})
    info = await app.update_queue("limits", max_backlog_messages=0, max_backlog_bytes=0)
    assert (info.settings.max_backlog_messages, info.settings.max_backlog_bytes) == (None, None)
    await app.queue("limits").send({"n": 2})
    [listed] = [q for q in await app.list_queues() if q.name == "limits"]
    assert listed.settings.max_backlog_messages is None


@pytest.mark.parametrize("limit", [-1, 0, 1.5, "10", 2**63, True])
async def test_out_of_range_backlog_limits_are_refused(app: conveyor.App, limit: object) -> None:
    with pytest.raises(LimitExceeded, match="max_backlog_messages"):
        await app.create_queue("bad", max_backlog_messages=limit)  # type: ignore[arg-type]
    assert await app.backend.get_queue("bad") is None


async def test_a_topic_publish_into_a_full_subscription_queue_stores_nothing_anywhere(
    app: conveyor.App,
) -> None:
    await app.create_queue("kitchen", max_backlog_messages=1)
    await app.create_queue("billing")
    await app.subscribe("orders", queue="kitchen")
    await app.subscribe("orders", queue="billing")
    orders = app.topic("orders")
    await orders.publish({"type": "ORDER_UP", "n": 1})
    with pytest.raises(QueueFull, match="kitchen"):
        await orders.publish({"type": "ORDER_UP", "n": 2})
    assert [(await app.queue(name).stats()).total for name in ("kitchen", "billing")] == [1, 1]
