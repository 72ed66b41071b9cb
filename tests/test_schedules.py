"""Schedules (docs/concepts/schedules.md): cron or every-N-seconds ticks, each sent exactly once
however many workers run (the queue's dedup), at most the one latest missed tick after downtime,
time zones honoured, bad schedules refused with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import conveyor
from conveyor.limits import DEFAULT_SCHEDULE_CATCH_UP_SECONDS, SCHEDULE_DEDUP_MARGIN_SECONDS
from conveyor.testing import FakeClock, drain
from tests.support.engines import ENGINES, EngineSetup
from tests.support.polling import eventually

# 2026-01-05 12:00:00 UTC, a Monday: a round start so that the ticks are easy to name
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- registration and timing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "options", "message"),
    [
        ("61 * * * *", {}, "invalid cron expression '61 * * * *'"),
        ("* * *", {}, "five fields"),
        (None, {}, "a cron expression or every="),
        ("* * * * *", {"every": 5}, "a cron expression or every="),
        (None, {"every": 0.5}, "every=0.5"),
        (None, {"every": "soon"}, "'soon' is not a duration"),
        ("* * * * *", {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ("* * * * *", {"name": "has space"}, "invalid schedule name"),
        ("* * * * *", {"catch_up": 10**6}, "catch_up="),
    ],
)
def test_a_bad_schedule_is_refused_with_a_clear_error(
    cron: str | None, options: dict[str, object], message: str
) -> None:
    app = conveyor.App("memory://")
    with pytest.raises(conveyor.InvalidSchedule, match=message.replace("*", r"\*").replace("(", r"\(")):
        app.schedule(cron, queue="reports", **options)  # type: ignore[arg-type]
    assert app.schedules == []


def test_a_body_json_cannot_carry_is_refused_at_registration() -> None:
    app = conveyor.App("memory://")
    with pytest.raises(conveyor.BodyNotSerializable):
        app.schedule(every=60, queue="reports", body={"at": float("nan")})
    assert app.schedules == []


def test_two_schedules_of_one_name_are_refused() -> None:
    app = conveyor.App("memory://")
    app.schedule(every=60, queue="reports")
    with pytest.raises(conveyor.InvalidSchedule, match="already registered"):
        app.schedule(every="1m", queue="reports")
    app.schedule(every="1m", queue="reports", name="second")
    assert [s.name for s in app.schedules] == ["reports/every-60s", "second"]


def test_schedule_is_also_a_decorator_that_leaves_the_function_alone() -> None:
    app = conveyor.App("memory://")

    @app.schedule("0 6 * * *", queue="reports", body={"kind": "daily"})
    @app.consumer("reports")
    async def report(batch: conveyor.MessageBatch, env: conveyor.Env) -> None: ...

    assert callable(report)
    [schedule] = app.schedules
    assert (schedule.name, schedule.cron) == ("reports/0_6_*_*_*", "0 6 * * *")
    assert schedule.body == {"kind": "daily"}


def test_cron_ticks_are_read_in_the_schedules_time_zone() -> None:
    app = conveyor.App("memory://")
    paris = app.schedule("0 9 * * *", queue="reports", tz="Europe/Paris")
    utc = app.schedule("0 9 * * *", queue="reports", name="utc")
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer
    assert paris.next_tick(at("2026-01-05T00:00:00+00:00")) == at("2026-01-05T08:00:00+00:00")
    assert paris.next_tick(at("2026-07-06T00:00:00+00:00")) == at("2026-07-06T07:00:00+00:00")
    assert utc.next_tick(at("2026-01-05T00:00:00+00:00")) == at("2026-01-05T09:00:00+00:00")


def test_daylight_saving_time_runs_a_skipped_tick_after_the_change_and_a_repeated_one_once() -> None:
    app = conveyor.App("memory://")
    nightly = app.schedule("30 2 * * *", queue="reports", tz="Europe/Paris")
    # 2026-03-29: Paris goes from 02:00 to 03:00; there is no 02:30 that day: it runs at 03:00
    ticks = nightly.next_ticks(at("2026-03-28T12:00:00+01:00"), 2)
    assert [datetime.fromtimestamp(t, nightly.zone()).isoformat() for t in ticks] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # 2026-10-25: 02:30 comes twice (summer time, then winter time); it runs once
    ticks = nightly.next_ticks(at("2026-10-24T12:00:00+02:00"), 2)
    assert [datetime.fromtimestamp(t, nightly.zone()).date().isoformat() for t in ticks] == [
        "2026-10-25",
        "2026-10-26",
    ]


def test_every_ticks_on_multiples_of_the_interval_so_every_worker_agrees() -> None:
    schedule = conveyor.App("memory://").schedule(every="30s", queue="reports")
    assert schedule.every == 30
    assert schedule.previous_tick(START + 29.9) == START
    assert schedule.next_ticks(START + 1, 3) == [START + 30, START + 60, START + 90]
    assert schedule.dedup_id(START + 30) == f"schedule:reports/every-30s:{int(START) + 30}"


# -- workers, on the engines that obey a FakeClock ------------------------------------------

LOCAL_CLOCK_ENGINES = [engine for engine in ENGINES if engine.local_clock]


@pytest.fixture(params=LOCAL_CLOCK_ENGINES, ids=lambda engine: engine.name)
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    setup: EngineSetup = request.param
    setup.check()
    async with setup.storage(tmp_path) as url:
        yield url


class Workers:
    """Apps on one storage and one FakeClock, each running its worker (its scheduler) in a task."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        self.url, self.clock = url, clock
        self.apps: list[conveyor.App] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stops: list[asyncio.Event] = []

    def app(self) -> conveyor.App:
        # memory:// Apps share nothing: every worker of a memory test shares the first one's store
        if self.url.startswith("memory") and self.apps:
            app = conveyor.App(backend=self.apps[0].backend.sibling(), clock=self.clock)
        else:
            app = conveyor.App(self.url, clock=self.clock)
        self.apps.append(app)
        return app

    def start(self, app: conveyor.App) -> None:
        stop = asyncio.Event()
        self.stops.append(stop)
        self.tasks.append(asyncio.create_task(app.run_consumers(stop=stop)))

    async def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks)
        self.tasks, self.stops = [], []

    async def close(self) -> None:
        await self.stop_all()
        for app in self.apps:
            await app.close()


@pytest.fixture
async def workers(shared_url: str) -> AsyncIterator[Workers]:
    running = Workers(shared_url, FakeClock(START))
    try:
        yield running
    finally:
        await running.close()


async def ticks_sent(app: conveyor.App, queue: str = "ticks") -> list[str]:
    return sorted(m.body["tick"] for m in await app.queue(queue).peek(1_000))


async def advance_until(workers: Workers, seconds: float, sent: int, queue: str = "ticks") -> None:
    """Move the fake clock and wait until the workers have sent `sent` ticks in all."""
    workers.clock.advance(seconds)
    app = workers.apps[0]

    async def done() -> bool:
        try:
            return (await app.queue(queue).stats()).total >= sent
        except conveyor.QueueNotFound:  # the scheduler has not created it yet
            return False

    await eventually(done, f"{sent} ticks are in {queue}")
    await asyncio.sleep(0.05)  # a duplicate, were there one, would land now


async def test_two_workers_send_exactly_one_message_per_tick(workers: Workers) -> None:
    for _ in range(2):
        app = workers.app()
        app.schedule(every=10, queue="ticks")
        workers.start(app)
    await advance_until(workers, 0, 1)  # the tick of START, which is now: caught up at start
    for n in range(1, 4):
        await advance_until(workers, 10, n + 1)
    expected = [datetime.fromtimestamp(START + 10 * n, UTC).isoformat() for n in range(4)]
    assert await ticks_sent(workers.apps[0]) == expected
    bodies = [m.body for m in await workers.apps[0].queue("ticks").peek(10)]
    assert {body["schedule"] for body in bodies} == {"ticks/every-10s"}


async def test_a_schedule_sends_its_body_and_cron_ticks_with_the_fake_clock(workers: Workers) -> None:
    app = workers.app()
    app.schedule("*/5 * * * *", queue="reports", body={"report": "sales"}, catch_up=0)
    workers.start(app)
    await advance_until(workers, 5 * 60, 1, "reports")
    await advance_until(workers, 5 * 60, 2, "reports")
    assert [m.body for m in await app.queue("reports").peek(10)] == [{"report": "sales"}] * 2


async def test_after_downtime_only_the_latest_missed_tick_is_sent_within_the_catch_up_window(
    workers: Workers,
) -> None:
    first = workers.app()
    first.schedule(every=600, queue="ticks")
    workers.start(first)
    await advance_until(workers, 0, 1)  # START
    await workers.stop_all()
    # down for 55 minutes: the ticks of 12:10 ... 12:50 were missed; 12:50 is 5 minutes old
    workers.clock.advance(55 * 60)
    second = workers.app()
    second.schedule(every=600, queue="ticks")
    workers.start(second)
    await advance_until(workers, 0, 1)
    assert len(await ticks_sent(first)) == 1  # nothing caught up: the latest tick is too old
    await workers.stop_all()
    # down until 20 s after 13:10: that tick is within the 60 s catch-up window, sent once
    workers.clock.advance(15 * 60 + 20)
    third = workers.app()
    third.schedule(every=600, queue="ticks")
    workers.start(third)
    await advance_until(workers, 0, 2)
    assert (await ticks_sent(first))[-1] == datetime.fromtimestamp(START + 70 * 60, UTC).isoformat()
    await advance_until(workers, 10 * 60, 3)  # 13:20 as usual
    assert len(await ticks_sent(first)) == 3


async def test_a_worker_restarted_within_the_window_does_not_send_a_tick_twice(workers: Workers) -> None:
    app = workers.app()
    app.schedule(every=600, queue="ticks")
    workers.start(app)
    await advance_until(workers, 0, 1)
    await workers.stop_all()
    again = workers.app()
    again.schedule(every=600, queue="ticks")
    workers.start(again)  # catches up the tick of START, already sent: deduplicated
    await advance_until(workers, 10, 1)
    assert len(await ticks_sent(app)) == 1


async def test_a_queue_whose_dedup_window_is_too_short_stops_the_worker_with_a_clear_error(
    workers: Workers,
) -> None:
    app = workers.app()
    await app.create_queue("ticks", dedup_window_seconds=0)
    app.schedule(every=10, queue="ticks")
    needed = DEFAULT_SCHEDULE_CATCH_UP_SECONDS + SCHEDULE_DEDUP_MARGIN_SECONDS
    with pytest.raises(conveyor.InvalidSchedule, match=f"dedup window of 0 s.*at least {needed:g} s"):
        await app.run_consumers()
    assert (await app.queue("ticks").stats()).total == 0


# -- worker processes -----------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    import conveyor

    app = conveyor.App(sys.argv[1])
    app.schedule(every=1, queue="ticks", catch_up=0)
    app.run()
    """
)

# How many ticks the processes run for, and how long they may take in all (a bound for a failing
# run, not a speed check).
PROCESS_TICKS = 4
PROCESS_TIMEOUT_SECONDS = 60


async def test_two_worker_processes_send_exactly_one_message_per_tick(
    engine: EngineSetup, url: str, app: conveyor.App
) -> None:
    if engine.name == "memory":
        pytest.skip("memory:// lives in one process")
    await app.create_queue("ticks")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, url, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:

        async def enough() -> bool:
            return (await app.queue("ticks").stats()).total >= PROCESS_TICKS + 1

        await eventually(enough, f"{PROCESS_TICKS + 1} ticks are sent", PROCESS_TIMEOUT_SECONDS)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        outputs = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    ticks = [datetime.fromisoformat(tick).timestamp() for tick in await ticks_sent(app)]
    assert len(ticks) == len(set(ticks))  # one message per tick
    # and no tick skipped between the first and the last
    assert ticks == [ticks[0] + n for n in range(len(ticks))], json.dumps(ticks)


async def test_drain_in_a_test_sends_the_tick_due_on_a_fake_clock_once() -> None:
    # docs/testing.md: drain runs the App's schedules as a worker does, on the App's clock
    clock = FakeClock(START + 30)
    app = conveyor.App("memory://", clock=clock)
    app.schedule(every=60, queue="reports", body={"report": "hourly"})
    handled: list[object] = []

    @app.consumer("reports")
    async def report(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)

    async with app:
        assert await drain(app) == 1  # the tick of START, 30 s ago: within catch_up
        assert await drain(app) == 0  # the same tick again: deduplicated
        clock.advance(60)
        assert await drain(app) == 1
    assert handled == [{"report": "hourly"}, {"report": "hourly"}]
