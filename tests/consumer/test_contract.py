"""The consumer contract of docs/semantics.md (Receiving, Batches and concurrency): outcome rules,
retries, dead letters, batching, leases, concurrency, env and lifespan. Runs unchanged on every
engine in ENGINES (tests/support/engines.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import conveyor
from conveyor.consumer import backoff
from conveyor.consumer import runner as runner_module
from conveyor.testing import drain
from conveyor.types import Settlement, SettleResult
from tests.support.apps import AppFactory, TimeMachine
from tests.support.polling import eventually

Handler = Callable[[conveyor.MessageBatch, conveyor.Env], Awaitable[None]]


class Recorder:
    """Remembers every batch a handler saw: message bodies and attempts."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, int]]] = []

    def record(self, batch: conveyor.MessageBatch) -> None:
        self.batches.append([(message.body, message.attempts) for message in batch.messages])

    @property
    def deliveries(self) -> Counter[str]:
        return Counter(str(body) for batch in self.batches for body, _ in batch)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def queue_is_empty(queue: conveyor.Queue) -> bool:
    return (await queue.stats()).total == 0


async def bodies(queue: conveyor.Queue) -> list[Any]:
    return [message.body for message in await queue.peek(100)]


# -- outcome rules -----------------------------------------------------------------------------


async def test_a_handler_that_returns_acks_every_message(app: conveyor.App, recorder: Recorder) -> None:
    @app.consumer("jobs")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    await app.queue("jobs").send_batch([{"n": n} for n in range(25)])
    assert await drain(app) == 25
    assert sorted(recorder.deliveries.values()) == [1] * 25
    assert all(attempts == 1 for batch in recorder.batches for _, attempts in batch)
    assert (await app.queue("jobs").stats()).total == 0


async def test_a_handler_that_raises_retries_unmarked_messages_and_explicit_marks_stand(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    seen: list[tuple[str, int]] = []

    @app.consumer("jobs", max_batch_size=10, max_retries=5)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            seen.append((message.body, message.attempts))
        if len(batch.messages) == 3:
            by_body = {message.body: message for message in batch.messages}
            by_body["acked"].ack()
            by_body["delayed"].retry(delay_seconds=60)
            raise RuntimeError("the rest fails")

    await app.queue("jobs").send_batch(["acked", "delayed", "unmarked"])
    await drain(app)
    # "acked" stood despite the error; "unmarked" was retried at once and then acked;
    # "delayed" waits for its own delay.
    assert Counter(body for body, _ in seen) == {"acked": 1, "delayed": 1, "unmarked": 2}
    assert ("unmarked", 2) in seen
    assert await bodies(app.queue("jobs")) == ["delayed"]
    assert (await app.queue("jobs").stats()).delayed == 1


async def test_the_first_call_on_a_message_wins(app: conveyor.App, recorder: Recorder) -> None:
    @app.consumer("jobs", max_retries=5, max_batch_size=1)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        [message] = batch.messages
        if message.body == "ack-then-retry":
            message.ack()
            message.retry()
        else:
            message.retry(delay_seconds=60)
            message.ack()

    await app.queue("jobs").send("ack-then-retry")
    await app.queue("jobs").send("retry-then-ack")
    await drain(app)
    assert await bodies(app.queue("jobs")) == ["retry-then-ack"]
    assert recorder.deliveries == {"ack-then-retry": 1, "retry-then-ack": 1}


async def test_ack_all_and_retry_all(app: conveyor.App, time_machine: TimeMachine) -> None:
    calls = 0

    @app.consumer("jobs", max_retries=5)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # long enough that a slow drain on a loaded machine does not reach it in real time
            batch.retry_all(delay_seconds=10)
            raise RuntimeError("ignored: every message is already marked")
        batch.ack_all()

    await app.queue("jobs").send_batch([1, 2, 3])
    await drain(app)
    assert (await app.queue("jobs").stats()).delayed == 3
    await time_machine.advance(10.5)
    await drain(app)
    assert (await app.queue("jobs").stats()).total == 0
    assert calls == 2


@pytest.mark.parametrize(
    ("explicit", "consumer_default", "expected"),
    [(10.0, 60.0, 10.0), (None, 10.0, 10.0), (None, 0.0, 0.0)],
    ids=["message-delay-wins", "consumer-retry-delay", "no-delay"],
)
async def test_retry_delay_precedence(
    app: conveyor.App,
    time_machine: TimeMachine,
    explicit: float | None,
    consumer_default: float,
    expected: float,
) -> None:
    deliveries = 0

    @app.consumer("jobs", retry_delay=consumer_default, max_retries=5)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal deliveries
        deliveries += 1
        if deliveries == 1:
            batch.messages[0].retry(delay_seconds=explicit)

    await app.queue("jobs").send("x")
    await drain(app)
    stats = await app.queue("jobs").stats()
    if expected == 0:
        assert (deliveries, stats.total) == (2, 0)
        return
    assert (deliveries, stats.delayed) == (1, 1)
    await time_machine.advance(expected + 0.2)
    await drain(app)
    assert (deliveries, (await app.queue("jobs").stats()).total) == (2, 0)


# -- dead letters ----------------------------------------------------------------------------------


async def test_after_max_retries_a_failing_message_moves_to_the_dead_letter_queue(
    app: conveyor.App, recorder: Recorder
) -> None:
    @app.consumer("jobs", max_retries=2, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        for message in batch.messages:
            if message.body == "ok":
                message.ack()
        raise ValueError("cannot handle poison")

    [poison_id, _] = await app.queue("jobs").send_batch(["poison", "ok"])
    await app.queue("jobs").send(b"\x00raw", content_type="bytes")
    await drain(app)
    assert recorder.deliveries == {"poison": 3, "ok": 1, str(b"\x00raw"): 3}
    assert (await app.queue("jobs").stats()).total == 0
    dead = {str(message.body): message for message in await app.queue("jobs-dlq").peek()}
    assert set(dead) == {"poison", str(b"\x00raw")}
    assert dead[str(b"\x00raw")].content_type == "bytes"
    info = dead["poison"].dead_letter
    assert info is not None
    assert (info.original_id, info.source_queue, info.attempts) == (poison_id, "jobs", 3)
    assert info.error == "ValueError: cannot handle poison"


async def test_max_retries_zero_dead_letters_on_the_first_failure(app: conveyor.App) -> None:
    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        batch.retry_all()

    await app.queue("jobs").send("x")
    await drain(app)
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    assert dead.dead_letter.attempts == 1
    assert dead.dead_letter.error == "retried by the handler"


async def test_without_a_dead_letter_queue_a_failing_message_is_deleted_and_logged(
    app: conveyor.App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.consumer("jobs", max_retries=1)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise RuntimeError("always")

    message_id = await app.queue("jobs").send("x")
    with caplog.at_level(logging.WARNING, logger="conveyor.consumer"):
        await drain(app)
    assert (await app.queue("jobs").stats()).total == 0
    assert [q.name for q in await app.list_queues()] == ["jobs"]
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead_letter")]
    assert message_id in line
    assert "dropped" in line
    assert "RuntimeError: always" in line


async def test_an_explicit_dead_letter_skips_the_remaining_retries(app: conveyor.App) -> None:
    @app.consumer("jobs", max_retries=10, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        batch.messages[0].dead_letter("malformed order")

    await app.queue("jobs").send("x")
    await drain(app)
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    assert (dead.dead_letter.attempts, dead.dead_letter.error) == (1, "malformed order")


async def test_replayed_dead_letters_are_consumed_again_from_attempt_one(app: conveyor.App) -> None:
    fail = True
    attempts: list[int] = []

    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        attempts.extend(message.attempts for message in batch.messages)
        if fail:
            raise RuntimeError("down")

    await app.queue("jobs").send({"order": 7})
    await drain(app)
    fail = False
    assert await app.replay("jobs-dlq", to="jobs") == 1
    await drain(app)
    assert attempts == [1, 1]
    assert (await app.queue("jobs-dlq").stats()).total == 0


# -- handler time limits ---------------------------------------------------------------------------


async def run_until(
    app: conveyor.App, time_machine: TimeMachine, step: float, done: Callable[[], bool]
) -> None:
    """Run the app's consumers, moving time on by `step` until `done()`, then stop them."""
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    try:
        async with asyncio.timeout(60):
            while not done():
                await time_machine.advance(step)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await worker


async def test_a_handler_past_its_timeout_is_cancelled_and_its_unmarked_messages_retried(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    seen: list[tuple[str, int]] = []
    cancelled: list[int] = []

    @app.consumer("jobs", timeout=1, max_batch_size=3, max_retries=5, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        seen.extend((message.body, message.attempts) for message in batch.messages)
        if batch.messages[0].attempts > 1:
            return
        next(m for m in batch.messages if m.body == "marked").ack()
        try:
            await asyncio.Event().wait()  # hangs: only the time limit ends it
        except asyncio.CancelledError:
            cancelled.append(len(batch.messages))
            raise

    await app.queue("jobs").send_batch(["marked", "a", "b"])
    await run_until(app, time_machine, 0.6, lambda: {("a", 2), ("b", 2)} <= set(seen))
    assert cancelled == [3]
    # the explicit ack stood; the unmarked messages came back as attempt 2
    assert sorted(seen) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("marked", 1)]
    await eventually(lambda: queue_is_empty(app.queue("jobs")), "the retried messages were acked")


async def test_a_message_that_keeps_timing_out_is_dead_lettered_with_the_time_limit_as_its_error(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    deliveries: list[int] = []

    @app.consumer("jobs", timeout=0.5, max_retries=1, dead_letter_queue="jobs-dlq", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        deliveries.extend(message.attempts for message in batch.messages)
        await asyncio.Event().wait()

    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send("slow")
    dead: list[Any] = []
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    try:
        async with asyncio.timeout(60):
            while not dead:
                await time_machine.advance(0.3)
                dead = await app.queue("jobs-dlq").peek()
    finally:
        stop.set()
        await worker
    assert deliveries == [1, 2]  # the timed-out delivery counted as an attempt
    [message] = dead
    assert message.dead_letter is not None
    assert message.dead_letter.attempts == 2
    assert "timed out after 0.5 s" in message.dead_letter.error


async def test_a_timed_out_batch_frees_its_slot_even_if_its_handler_ignores_the_cancel(
    app: conveyor.App, time_machine: TimeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conveyor.limits, "HANDLER_CANCEL_GRACE_SECONDS", 0.05)
    release = asyncio.Event()
    handled: list[tuple[str, int]] = []

    @app.consumer("jobs", timeout=1, max_batch_size=1, max_concurrency=1, max_retries=5, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        [message] = batch.messages
        handled.append((message.body, message.attempts))
        if message.body == "stubborn" and message.attempts == 1:
            while not release.is_set():  # swallows every cancel
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()

    await app.queue("jobs").send("stubborn")
    await app.queue("jobs").send("next")
    try:
        await run_until(app, time_machine, 0.6, lambda: {("next", 1), ("stubborn", 2)} <= set(handled))
    finally:
        release.set()
    # one slot: "next" ran while the stubborn first delivery was still running, after its limit
    assert handled[0] == ("stubborn", 1)


async def test_a_handler_within_its_timeout_is_left_alone(app: conveyor.App, recorder: Recorder) -> None:
    @app.consumer("jobs", timeout=3600)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        await asyncio.sleep(0.01)

    await app.queue("jobs").send_batch([1, 2, 3])
    assert await drain(app) == 3
    assert sorted(recorder.deliveries.values()) == [1, 1, 1]


# -- retry backoff ---------------------------------------------------------------------------------


async def retried_after(app: conveyor.App, *, failing_attempt: int) -> tuple[float, float]:
    """Fail one message at delivery `failing_attempt` (earlier deliveries retry it explicitly
    at once); return the bounds (low, high) of how long after its settle it becomes visible."""

    @app.consumer(
        "jobs", retry_backoff="exponential", retry_backoff_base=100, retry_backoff_cap=350, max_retries=10
    )
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            if message.attempts < failing_attempt:
                message.retry(delay_seconds=0)  # an explicit delay wins over the backoff
        raise RuntimeError("fails")

    await app.queue("jobs").send("x")
    before = app.clock.now()
    await drain(app)
    after = app.clock.now()
    [stored] = await app.backend.peek("jobs", 10)
    assert stored.attempts == failing_attempt
    return stored.visible_at - after, stored.visible_at - before


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 100), (2, 200), (3, 350), (6, 350)])
async def test_exponential_backoff_doubles_from_its_base_up_to_its_cap(
    app: conveyor.App, monkeypatch: pytest.MonkeyPatch, attempt: int, ceiling: float
) -> None:
    monkeypatch.setattr(backoff, "full_jitter", lambda ceiling, rng: ceiling)  # the longest wait
    low, high = await retried_after(app, failing_attempt=attempt)
    # the engine's clock may differ from ours by a little (a server's), never by seconds
    assert low - 1 <= ceiling <= high + 1


async def test_exponential_backoff_waits_a_random_time_up_to_its_ceiling(app: conveyor.App) -> None:
    low, high = await retried_after(app, failing_attempt=2)
    assert high >= -1 and low <= 200 + 1  # the second retry waits 0 to base * 2 = 200 s


def test_full_jitter_spreads_waits_over_the_whole_range() -> None:
    rng = random.Random(7)
    waits = [backoff.full_jitter(backoff.exponential_ceiling(4, 1.0, 300.0), rng) for _ in range(1000)]
    assert all(0 <= wait <= 8 for wait in waits)
    assert min(waits) < 1 and max(waits) > 7  # spread, not bunched at the ceiling
    assert backoff.exponential_ceiling(10_000, 1.0, 300.0) == 300.0


def test_exponential_backoff_and_a_fixed_retry_delay_exclude_each_other() -> None:
    app = conveyor.App("memory://")
    with pytest.raises(ValueError, match="retry_delay is the fixed delay"):
        app.consumer("q", retry_delay=5, retry_backoff="exponential")
    with pytest.raises(ValueError, match="retry_backoff must be"):
        app.consumer("q", retry_backoff="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_backoff_cap"):
        app.consumer("q", retry_backoff="exponential", retry_backoff_cap=86_401)


# -- deliveries without an outcome (docs/semantics.md) -------------------------------------------


async def _lose_deliveries(app: conveyor.App, body: Any, times: int, time_machine: TimeMachine) -> str:
    """Send `body` and deliver it `times` times to a client that never settles (a worker that
    died): each lease expires."""
    [message_id] = await _lose_many(app, [body], times, time_machine)
    return message_id


async def _lose_many(
    app: conveyor.App, bodies: list[Any], times: int, time_machine: TimeMachine
) -> list[str]:
    queue = app.queue("jobs")
    ids = await queue.send_batch(bodies)
    for _ in range(times):
        pulled = await queue.pull(batch_size=len(bodies), visibility_timeout=0.3)
        assert sorted(m.id for m in pulled) == sorted(ids)
        await time_machine.advance(0.5)
    return ids


async def test_a_message_delivered_max_retries_plus_one_times_without_an_outcome_is_dead_lettered(
    app: conveyor.App, recorder: Recorder, time_machine: TimeMachine, caplog: pytest.LogCaptureFixture
) -> None:
    @app.consumer("jobs", max_retries=1, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    message_id = await _lose_deliveries(app, "killer", 2, time_machine)
    with caplog.at_level(logging.WARNING, logger="conveyor.consumer"):
        await drain(app)
    assert recorder.batches == []  # at lease time: no handler saw it a third time
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.body == "killer"
    assert dead.dead_letter is not None
    assert (dead.dead_letter.original_id, dead.dead_letter.attempts) == (message_id, 2)
    assert dead.dead_letter.error == (
        "delivered 2 times without an outcome: the worker handling it exited or lost its lease 2 times"
    )
    assert (await app.queue("jobs").stats()).total == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(message_id in line and line.startswith("dead_letter") for line in lines)


async def test_the_bound_counts_handler_retries_and_lost_deliveries_together(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    queue = app.queue("jobs")
    await queue.send("flaky")
    [pulled] = await queue.pull()
    await queue.ack(retries=[pulled.lease_id])  # a delivery with an outcome
    [pulled] = await queue.pull(visibility_timeout=0.3)  # and one without
    await time_machine.advance(0.5)

    @app.consumer("jobs", max_retries=1, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise AssertionError("delivered past the bound")

    await drain(app)
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    assert dead.dead_letter.error == (
        "delivered 2 times, the last 1 without an outcome: "
        "the worker handling it exited or lost its lease 1 time"
    )


async def test_a_suspect_under_the_bound_is_handled_and_acked(
    app: conveyor.App, recorder: Recorder, time_machine: TimeMachine
) -> None:
    @app.consumer("jobs", max_retries=3, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    await _lose_deliveries(app, "survivor", 2, time_machine)
    await drain(app)
    assert recorder.batches == [[("survivor", 3)]]
    assert (await app.queue("jobs").stats()).total == 0
    assert (await app.queue("jobs-dlq").stats()).total == 0


async def test_suspects_run_alone(app: conveyor.App, time_machine: TimeMachine) -> None:
    # A suspect's batch holds it alone, and no other batch of its consumer runs with it: a crash
    # it causes convicts it only.
    suspects = [f"suspect-{n}" for n in range(4)]
    await _lose_many(app, suspects, 1, time_machine)
    await app.queue("jobs").send_batch([f"innocent-{n}" for n in range(12)])
    batches: list[list[str]] = []
    running: list[list[str]] = []
    overlaps: list[list[list[str]]] = []

    @app.consumer("jobs", max_batch_size=5, max_concurrency=4, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        names = [str(message.body) for message in batch.messages]
        batches.append(names)
        running.append(names)
        if len(running) > 1 and any(name.startswith("suspect") for names in running for name in names):
            overlaps.append(list(running))
        await asyncio.sleep(0.05)
        running.remove(names)

    await drain(app)
    handled = sorted(name for batch in batches for name in batch)
    assert handled == sorted([*suspects, *(f"innocent-{n}" for n in range(12))])
    assert all(len(batch) == 1 for batch in batches if any(n.startswith("suspect") for n in batch))
    assert overlaps == []


async def test_a_suspect_starts_once_the_outcomes_of_finished_batches_are_settled(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app(real_clock=True)
    queue = app.queue("jobs")
    await queue.send("suspect")
    assert len(await queue.pull(visibility_timeout=1.0)) == 1  # a delivery that ends without an outcome
    await queue.send("finished")  # visible before the suspect is again: leased first
    await asyncio.sleep(1.2)
    settle = app.core.settle

    async def slow_settle(name: str, settlement: Settlement) -> SettleResult:
        await asyncio.sleep(0.5)
        return await settle(name, settlement)

    monkeypatch.setattr(app.core, "settle", slow_settle)
    seen_by_suspect: list[list[str]] = []

    @app.consumer("jobs", max_batch_size=1, max_concurrency=2, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        if batch.messages[0].body == "suspect":
            seen_by_suspect.append(sorted(str(m.body) for m in await queue.peek(10)))

    async with asyncio.timeout(20):
        await drain(app)
    assert seen_by_suspect == [["suspect"]]  # "finished" was acked (durably) before it started
    assert (await queue.stats()).total == 0


# -- batching -------------------------------------------------------------------------------------


async def test_batches_hold_at_most_max_batch_size_messages(app: conveyor.App, recorder: Recorder) -> None:
    @app.consumer("jobs", max_batch_size=10)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    await app.queue("jobs").send_batch(list(range(25)))
    await drain(app)
    sizes = [len(batch) for batch in recorder.batches]
    assert sum(sizes) == 25
    assert max(sizes) == 10


async def test_a_full_batch_is_handed_over_at_once(make_app: AppFactory) -> None:
    app = await make_app()
    handed: asyncio.Queue[int] = asyncio.Queue()

    @app.consumer("jobs", max_batch_size=5, max_batch_timeout=60)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handed.put_nowait(len(batch))

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await app.queue("jobs").send_batch(list(range(5)))
    async with asyncio.timeout(20):
        assert await handed.get() == 5
    stop.set()
    await worker


async def test_a_partial_batch_waits_for_max_batch_timeout(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    handed: asyncio.Queue[int] = asyncio.Queue()

    @app.consumer("jobs", max_batch_size=10, max_batch_timeout=1)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handed.put_nowait(len(batch))

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await app.queue("jobs").send_batch([1, 2, 3])
    await asyncio.sleep(0.2)
    assert handed.empty()
    await time_machine.advance(1.2)
    async with asyncio.timeout(20):
        assert await handed.get() == 3
    stop.set()
    await worker


async def test_max_batch_timeout_zero_hands_over_whatever_is_there(make_app: AppFactory) -> None:
    app = await make_app()
    handed: asyncio.Queue[int] = asyncio.Queue()

    @app.consumer("jobs", max_batch_size=100, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handed.put_nowait(len(batch))

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await app.queue("jobs").send("one")
    async with asyncio.timeout(20):
        assert await handed.get() == 1
    stop.set()
    await worker


# -- leases ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_long_handler_keeps_its_lease(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    deliveries: list[int] = []

    @app.consumer("jobs", visibility_timeout=0.3, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        deliveries.extend(message.attempts for message in batch.messages)
        await asyncio.sleep(1.2)  # four times the lease: renewed by the heartbeat

    other = await make_app(real_clock=True)
    await app.queue("jobs").send("slow")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await asyncio.sleep(0.6)
    assert await other.queue("jobs").pull() == []  # still leased to the worker
    await eventually(lambda: queue_is_empty(app.queue("jobs")), "the slow message was acked")
    stop.set()
    await worker
    assert deliveries == [1]


@pytest.mark.slow
async def test_a_batch_finishing_within_the_shutdown_grace_keeps_its_lease(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    entered = asyncio.Event()
    deliveries: list[int] = []

    @app.consumer("jobs", visibility_timeout=0.3, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        deliveries.extend(message.attempts for message in batch.messages)
        entered.set()
        await asyncio.sleep(1.2)  # finishes during the grace, four leases later

    other = await make_app(real_clock=True)
    await app.queue("jobs").send("slow")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop, shutdown_grace=10))
    async with asyncio.timeout(20):
        await entered.wait()
    stop.set()
    await asyncio.sleep(0.7)
    assert await other.queue("jobs").pull() == []  # still leased: renewed while stopping
    await worker
    assert deliveries == [1]
    assert (await app.queue("jobs").stats()).total == 0


@pytest.mark.slow
async def test_batches_leased_ahead_keep_their_leases_and_run_in_order(
    make_app: AppFactory, recorder: Recorder
) -> None:
    # On a backlog one lease takes several batches; with one slot they wait, each longer than
    # the lease, so only renewal keeps them from being delivered twice. (A renewal every 0.2 s
    # leaves 0.4 s of slack: enough on a loaded CI machine, where 0.3 s leases were not.)
    app = await make_app(real_clock=True)

    @app.consumer("jobs", max_batch_size=10, max_concurrency=1, visibility_timeout=0.6, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        await asyncio.sleep(0.7)

    await app.queue("jobs").send_batch(list(range(40)))
    assert await drain(app) == 40
    assert [body for batch in recorder.batches for body, _ in batch] == list(range(40))
    assert all(attempts == 1 for batch in recorder.batches for _, attempts in batch)


async def test_a_batch_settles_while_the_next_one_runs(
    make_app: AppFactory, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot: the first batch's settle is held back, yet the second batch's handler runs.
    app = await make_app(real_clock=True)
    second_ran, first_settled = asyncio.Event(), asyncio.Event()
    settle = app.core.settle

    async def slow_settle(queue: str, settlement: Settlement) -> SettleResult:
        if not first_settled.is_set():
            await second_ran.wait()
        result = await settle(queue, settlement)
        first_settled.set()
        return result

    monkeypatch.setattr(app.core, "settle", slow_settle)

    @app.consumer("jobs", max_batch_size=1, max_concurrency=1, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        if len(recorder.batches) == 2:
            second_ran.set()

    await app.queue("jobs").send_batch(["first", "second"])
    async with asyncio.timeout(20):
        assert await drain(app) == 2
    assert [batch[0][0] for batch in recorder.batches] == ["first", "second"]
    assert (await app.queue("jobs").stats()).total == 0


async def test_finished_batches_wait_for_their_settle_up_to_the_engines_bound(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot and every settle held back: handlers keep running while finished batches wait for
    # their settle (room for the engine's settling_outcomes: 50 or 100 batches of 10); the next
    # batch then keeps the slot.
    app = await make_app(real_clock=True)
    release = asyncio.Event()
    settle = app.core.settle

    async def held_settle(queue: str, settlement: Settlement) -> SettleResult:
        await release.wait()
        return await settle(queue, settlement)

    monkeypatch.setattr(app.core, "settle", held_settle)
    handled: list[int] = []

    @app.consumer("jobs", max_batch_size=10, max_concurrency=1, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.append(len(batch.messages))

    waiting = runner_module.settling_batches(10, app.backend.settling_outcomes)
    assert waiting == app.backend.settling_outcomes // 10 >= 50
    total = (waiting + 5) * 10
    for start in range(0, total, 100):
        await app.queue("jobs").send_batch(list(range(start, min(start + 100, total))))
    worker = asyncio.create_task(drain(app))
    await eventually(lambda: len(handled) == waiting + 1, f"{waiting + 1} batches ran")
    await asyncio.sleep(0.2)
    assert len(handled) == waiting + 1  # `waiting` wait for their settle, the next holds the slot
    release.set()
    async with asyncio.timeout(30):
        assert await worker == total
    assert (await app.queue("jobs").stats()).total == 0


async def test_a_stopping_worker_gives_batches_leased_ahead_back_at_once(
    make_app: AppFactory, recorder: Recorder
) -> None:
    app = await make_app(real_clock=True)
    entered, finish = asyncio.Event(), asyncio.Event()

    @app.consumer("jobs", max_batch_size=10, max_concurrency=1, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)
        if len(recorder.batches) == 2:  # the first batch of the lease that took batches ahead
            entered.set()
            await finish.wait()

    queue = app.queue("jobs")
    await queue.send_batch(list(range(100)))
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    async with asyncio.timeout(20):
        await entered.wait()
    assert (await queue.stats()).in_flight > 10  # batches wait leased for the one slot
    stop.set()
    await eventually(
        lambda: _in_flight_is(queue, 10), "only the running batch stays leased while it finishes"
    )
    finish.set()
    await worker
    assert (await queue.stats()).backlog == 80

    await drain(app)
    assert sorted(body for batch in recorder.batches for body, _ in batch) == list(range(100))
    assert all(attempts == 1 for batch in recorder.batches[2:] for _, attempts in batch)


async def test_on_a_backlog_one_lease_takes_several_large_batches_ahead(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    entered, finish = asyncio.Event(), asyncio.Event()
    seen = 0

    @app.consumer("jobs", max_batch_size=50, max_concurrency=1, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal seen
        seen += 1
        if seen == 2:  # the first batch of the lease that took batches ahead
            entered.set()
            await finish.wait()

    ahead = runner_module.lease_ahead_size(50)
    total = 50 + ahead + 100  # the first lease takes one batch; the next `ahead`; 100 stay
    queue = app.queue("jobs")
    for start in range(0, total, 100):
        await queue.send_batch(list(range(start, min(start + 100, total))))
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    async with asyncio.timeout(20):
        await entered.wait()
    await eventually(lambda: _in_flight_is(queue, ahead), f"one lease holds {ahead}: that many batches of 50")
    stop.set()
    await eventually(lambda: _in_flight_is(queue, 50), "the batches waiting for the slot are given back")
    finish.set()
    await worker
    assert (await queue.stats()).backlog == total - 50 - 50


async def _in_flight_is(queue: conveyor.Queue, count: int) -> bool:
    return (await queue.stats()).in_flight == count


async def test_paused_queues_deliver_nothing_until_resumed(app: conveyor.App, recorder: Recorder) -> None:
    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    await app.create_queue("jobs")
    await app.queue("jobs").pause()
    await app.queue("jobs").send("waiting")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await asyncio.sleep(0.3)
    assert recorder.batches == []
    await app.queue("jobs").resume()
    await eventually(lambda: bool(recorder.batches), "the message was delivered")
    stop.set()
    await worker
    assert recorder.deliveries == {"waiting": 1}


async def test_delayed_messages_are_consumed_when_due(
    app: conveyor.App, time_machine: TimeMachine, recorder: Recorder
) -> None:
    @app.consumer("jobs")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    await app.queue("jobs").send("later", delay_seconds=10)
    await app.queue("jobs").send("now")
    assert await drain(app) == 1
    await time_machine.advance(10.5)
    assert await drain(app) == 1
    assert recorder.deliveries == {"now": 1, "later": 1}


async def test_a_running_worker_picks_up_a_delayed_message_when_it_comes_due(
    app: conveyor.App, time_machine: TimeMachine, recorder: Recorder
) -> None:
    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        recorder.record(batch)

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    await app.queue("jobs").send("later", delay_seconds=10)
    await asyncio.sleep(0.1)
    assert recorder.batches == []
    await time_machine.advance(10.5)
    await eventually(lambda: bool(recorder.batches), "the message was delivered")
    stop.set()
    await worker


# -- concurrency -----------------------------------------------------------------------------------


class ConcurrencyProbe:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def hold(self, seconds: float) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1


@pytest.mark.parametrize("bound", [1, 3])
async def test_max_concurrency_bounds_batches_in_flight(make_app: AppFactory, bound: int) -> None:
    app = await make_app(real_clock=True)
    probe = ConcurrencyProbe()

    @app.consumer("jobs", max_batch_size=1, max_concurrency=bound, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await probe.hold(0.1)

    await app.queue("jobs").send_batch(list(range(12)))
    assert await drain(app) == 12
    assert probe.peak == bound


async def test_autoscaling_grows_while_the_backlog_grows(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    probe = ConcurrencyProbe()

    @app.consumer("jobs", max_batch_size=1, max_concurrency=None, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await probe.hold(0.05)

    await app.queue("jobs").send_batch(list(range(60)))
    assert await drain(app) == 60
    assert 1 < probe.peak <= conveyor.limits.AUTOSCALE_MAX_CONCURRENCY


async def test_autoscaling_stays_at_one_for_a_trickle(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    probe = ConcurrencyProbe()

    @app.consumer("jobs", max_batch_size=10, max_concurrency=None, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await probe.hold(0.01)

    for n in range(5):
        await app.queue("jobs").send(n)
        await drain(app)
    assert probe.peak == 1


# -- batch.stats ---------------------------------------------------------------------------------


async def test_a_handler_reading_batch_stats_gets_a_snapshot_of_the_queue(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    seen: list[conveyor.QueueStats | None] = []

    @app.consumer("jobs", max_batch_size=10, max_concurrency=1, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        seen.append(batch.stats)
        await asyncio.sleep(0.1)  # the refresh the first read started completes meanwhile

    await app.queue("jobs").send_batch(list(range(30)))
    assert await drain(app) == 30
    assert seen[0] is None  # nothing counted before a handler asked
    snapshot = seen[1]
    # taken while the first batch ran: its messages were still in flight
    assert snapshot is not None and snapshot.in_flight >= 10
    assert seen[2] is snapshot  # refreshed at most every STATS_INTERVAL_SECONDS


async def test_a_consumer_whose_handlers_never_read_stats_never_counts_the_queue(
    app: conveyor.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # counting a long backlog costs the engine a scan: a worker that nobody asks must not pay it
    counted: list[str] = []
    original = app.backend.stats

    async def counting_stats(queue: str) -> conveyor.QueueStats:
        counted.append(queue)
        return await original(queue)

    monkeypatch.setattr(app.backend, "stats", counting_stats)
    done = asyncio.Event()
    handled = 0

    @app.consumer("jobs", max_batch_size=5, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal handled
        handled += len(batch.messages)
        if handled == 20:
            done.set()

    await app.queue("jobs").send_batch(list(range(20)))
    await asyncio.wait_for(app.run_consumers(stop=done), timeout=30)
    assert handled == 20
    assert counted == []


# -- env and lifespan -----------------------------------------------------------------------------


async def test_env_has_every_queue_and_what_the_lifespan_set_up(app: conveyor.App) -> None:
    events: list[str] = []

    @app.lifespan
    async def resources(env: conveyor.Env) -> AsyncIterator[None]:
        env.db = {"rows": []}
        events.append("open")
        yield
        events.append("close")

    @app.consumer("orders")
    async def take_order(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            env.db["rows"].append(message.body)
            await env.queues["kitchen"].send({"cook": message.body})

    @app.consumer("kitchen")
    async def cook(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        env.db["rows"].extend(message.body for message in batch.messages)

    await app.queue("orders").send("soup")
    await drain(app)
    assert events == ["open", "close"]
    assert app.env.db["rows"] == ["soup", {"cook": "soup"}]


async def test_a_missing_env_binding_names_the_lifespan(app: conveyor.App) -> None:
    with pytest.raises(AttributeError, match="lifespan"):
        _ = app.env.database


def test_bad_consumer_settings_fail_at_the_decorator() -> None:
    app = conveyor.App("memory://")
    with pytest.raises(ValueError, match="max_batch_timeout"):
        app.consumer("q", max_batch_timeout=61)
    with pytest.raises(ValueError, match="max_retries"):
        app.consumer("q", max_retries=101)
    with pytest.raises(ValueError, match="own dead-letter"):
        app.consumer("q", dead_letter_queue="q")
    register: Callable[[Handler], Handler] = app.consumer("q")
    register(lambda batch, env: asyncio.sleep(0))
    with pytest.raises(ValueError, match="already has a consumer"):
        register(lambda batch, env: asyncio.sleep(0))


async def test_a_worker_with_no_consumers_is_an_error(app: conveyor.App) -> None:
    with pytest.raises(ValueError, match="no consumers"):
        await app.run_consumers()


async def test_a_consumer_that_dies_at_start_up_stops_the_worker_which_raises_its_error(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app(auto_create=False)
    await app.create_queue("healthy")
    await app.create_queue("orphan")
    handled: list[Any] = []

    @app.consumer("healthy", max_batch_timeout=0)
    async def healthy(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)

    @app.consumer("orphan", dead_letter_queue="missing-dlq")
    async def orphan(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    await app.queue("healthy").send_batch(list(range(20)))
    with (
        caplog.at_level(logging.ERROR, logger="conveyor.worker"),
        pytest.raises(conveyor.QueueNotFound, match="missing-dlq"),
    ):
        await asyncio.wait_for(app.run_consumers(shutdown_grace=5), timeout=30)
    # the healthy consumer stopped with it and left nothing leased: the rest waits for the next worker
    stats = await app.queue("healthy").stats()
    assert (stats.in_flight, stats.backlog + len(handled)) == (0, 20)
    [line] = [record for record in caplog.records if record.name == "conveyor.worker"]
    assert "the consumer of 'orphan' died: QueueNotFound: queue 'missing-dlq'" in line.getMessage()
    assert line.exc_info is None  # a conveyor error is one line, no traceback


async def test_a_message_body_that_does_not_decode_fails_only_that_message(app: conveyor.App) -> None:
    from conveyor.core.ids import new_message_id
    from conveyor.types import OutgoingMessage

    handled: list[Any] = []

    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            try:
                handled.append(message.body)
            except ValueError as exc:
                message.dead_letter(f"undecodable: {exc}")

    await app.create_queue("jobs")
    await app.backend.send_many([OutgoingMessage("jobs", new_message_id(), b"{not json", "json")])
    await app.queue("jobs").send({"fine": True})
    await drain(app)
    assert handled == [{"fine": True}]
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    assert dead.dead_letter.error.startswith("undecodable")
