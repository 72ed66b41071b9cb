"""Schedules: a message sent to a queue on a cron expression or every N seconds, by every running
worker, exactly once per tick.

Every worker computes the same ticks (cron times in the schedule's time zone, or multiples of
`every` seconds since the epoch) and sends each one with the dedup id
`schedule:<name>:<tick epoch seconds>`: the queue's deduplication (docs/semantics.md) stores the
first send and drops the others, atomically on every engine. So any number of workers send one
message per tick, and a worker that stops costs nothing while another runs.

Missed ticks: a worker that starts sends the most recent tick only if it is at most
`catch_up_seconds` old (default `DEFAULT_SCHEDULE_CATCH_UP_SECONDS`), never a burst of the ticks
nobody sent while no worker ran. For the dedup to hold, the queue's dedup window must be at least
`catch_up_seconds + SCHEDULE_DEDUP_MARGIN_SECONDS`: a worker refuses to start otherwise
(`InvalidSchedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor import limits as L
from conveyor.codec import encode_json
from conveyor.core import Core
from conveyor.durations import parse_duration
from conveyor.errors import InvalidSchedule, QueueNotFound
from conveyor.producer import Queue
from conveyor.types import Clock

log = logging.getLogger("conveyor.schedules")

F = TypeVar("F", bound=Callable[..., Any])

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """One schedule: what it sends, where, and when. Made by `App.schedule` (or `[[schedules]]`
    in conveyor.toml); every worker of the App runs it.

    `name` names it in the dedup ids of its messages and in `conveyor schedules list`; the
    default is derived from the queue and the timing, so every worker agrees on it.
    """

    name: str
    queue: str
    cron: str | None
    every: float | None
    tz: str
    body: Any
    catch_up_seconds: float

    def __call__(self, function: F) -> F:
        """`@app.schedule(...)` above a function (often the queue's consumer) leaves it as it is:
        the schedule was registered when `app.schedule` was called."""
        return function

    @property
    def timing(self) -> str:
        """The cron expression, or `every N s`."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {self.every:g} s"

    def zone(self) -> ZoneInfo:
        """The time zone its cron expression is read in."""
        return ZoneInfo(self.tz)

    def previous_tick(self, now: float) -> float:
        """The latest tick at or before `now` (seconds since the epoch)."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        assert self.cron is not None
        at = datetime.fromtimestamp(now, self.zone()) + _ONE_MICROSECOND
        return next(CronSim(self.cron, at, reverse=True)).timestamp()

    def next_tick(self, after: float) -> float:
        """The first tick strictly after `after`."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        assert self.cron is not None
        return next(CronSim(self.cron, datetime.fromtimestamp(after, self.zone()))).timestamp()

    def next_ticks(self, after: float, count: int) -> list[float]:
        """The next `count` ticks after `after` (seconds since the epoch)."""
        ticks = []
        for _ in range(count):
            after = self.next_tick(after)
            ticks.append(after)
        return ticks

    def dedup_id(self, tick: float) -> str:
        """The dedup id of the message of `tick`: every worker sends it, the queue keeps one."""
        return f"schedule:{self.name}:{int(tick)}"

    def message(self, tick: float) -> Any:
        """The body sent at `tick`: the schedule's `body`, else its name and the tick's time."""
        if self.body is not None:
            return self.body
        return {"schedule": self.name, "tick": datetime.fromtimestamp(tick, UTC).isoformat()}

    @property
    def dedup_window_needed(self) -> float:
        """The shortest dedup window of its queue that keeps one message per tick."""
        return self.catch_up_seconds + L.SCHEDULE_DEDUP_MARGIN_SECONDS


def make_schedule(
    cron: str | None,
    *,
    queue: str,
    every: float | str | None,
    body: Any,
    tz: str,
    name: str | None,
    catch_up: float | str | None,
) -> Schedule:
    """A checked Schedule; InvalidSchedule (a ValueError) naming what is wrong otherwise, and
    BodyNotSerializable for a body JSON cannot carry."""
    L.validate_queue_name(queue)
    if (cron is None) == (every is None):
        raise InvalidSchedule("a schedule takes a cron expression or every=, exactly one of them")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidSchedule(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    seconds: float | None = None
    if every is not None:
        seconds = _seconds("every", every)
        if not L.MIN_SCHEDULE_EVERY_SECONDS <= seconds <= L.MAX_SCHEDULE_EVERY_SECONDS:
            raise InvalidSchedule(
                f"every={every!r}: a schedule runs every {L.MIN_SCHEDULE_EVERY_SECONDS:g} to "
                f"{L.MAX_SCHEDULE_EVERY_SECONDS:,} seconds"
            )
    if cron is not None:
        if not isinstance(cron, str):
            raise InvalidSchedule(f"a cron expression is a string, got {cron!r}")
        try:
            CronSim(cron, datetime.now(zone))
        except CronSimError as exc:
            raise InvalidSchedule(
                f"invalid cron expression {cron!r}: {exc} (five fields: minute hour day-of-month "
                "month day-of-week, e.g. '*/5 * * * *')"
            ) from None
    if body is not None:
        encode_json(body)  # BodyNotSerializable now, not at every tick
    window = L.DEFAULT_SCHEDULE_CATCH_UP_SECONDS if catch_up is None else _seconds("catch_up", catch_up)
    if window > L.MAX_SCHEDULE_CATCH_UP_SECONDS:
        raise InvalidSchedule(
            f"catch_up={catch_up!r}: at most {L.MAX_SCHEDULE_CATCH_UP_SECONDS:,} seconds "
            "(the queue's dedup window must cover it)"
        )
    if name is None:
        timing = cron.replace(" ", "_") if cron is not None else f"every-{seconds:g}s"
        name = f"{queue}/{timing}"
        if L.SCHEDULE_NAME_PATTERN.fullmatch(name) is None:  # too long: a digest keeps it stable
            name = f"{queue}/{hashlib.sha256(timing.encode()).hexdigest()[:12]}"
    if not isinstance(name, str) or L.SCHEDULE_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: use 1 to 80 printable ASCII characters without space or ':'"
        )
    return Schedule(name, queue, cron, seconds, tz, body, window)


def _seconds(what: str, value: float | str) -> float:
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise InvalidSchedule(f"{what}: {exc}") from None


def check_unique(schedules: Sequence[Schedule], new: Schedule) -> None:
    if any(schedule.name == new.name for schedule in schedules):
        raise InvalidSchedule(
            f"a schedule named {new.name!r} is already registered: give one of them another name="
        )


class Scheduler:
    """Runs an App's schedules in a worker until it stops: sends each tick as it comes due."""

    def __init__(self, core: Core, schedules: Sequence[Schedule]) -> None:
        self.core = core
        self.schedules = list(schedules)
        #: ticks this scheduler sent (deduplicated sends included), for tests and logs
        self.sent = 0

    async def check(self) -> None:
        """Create missing queues (as a send would) and refuse a queue whose dedup window is too
        short for one message per tick."""
        for schedule in self.schedules:
            await self.core.ensure_queue(schedule.queue)
            backend = await self.core.connected()
            info = await backend.get_queue(schedule.queue)
            if info is None:
                raise QueueNotFound(schedule.queue)
            window = info.settings.dedup_window_seconds
            if window < schedule.dedup_window_needed:
                raise InvalidSchedule(
                    f"schedule {schedule.name!r}: queue {schedule.queue!r} has a dedup window of "
                    f"{window:g} s, so several workers could each send a tick; it needs at least "
                    f"{schedule.dedup_window_needed:g} s (catch_up {schedule.catch_up_seconds:g} s + "
                    f"{L.SCHEDULE_DEDUP_MARGIN_SECONDS:g} s): raise the queue's dedup_window_seconds"
                )

    async def run(self, stopping: asyncio.Event) -> None:
        await self.check()
        async with asyncio.TaskGroup() as group:
            for schedule in self.schedules:
                group.create_task(self._run_one(schedule, stopping), name=f"schedule:{schedule.name}")

    async def send_due(self) -> None:
        """Send each schedule's latest tick if it is recent (within its catch_up), as a worker
        does when it starts; a tick already sent is deduplicated. For `conveyor.testing.drain`."""
        await self.check()
        for schedule in self.schedules:
            await self._send_latest(schedule)

    async def _send_latest(self, schedule: Schedule) -> float:
        """Send the latest tick if it is recent; returns that tick."""
        now = self.core.clock.now()
        last = schedule.previous_tick(now)
        if now - last <= schedule.catch_up_seconds:
            await self._send(schedule, last)  # the latest tick, if recent: sent once whoever sends it
        return last

    async def _run_one(self, schedule: Schedule, stopping: asyncio.Event) -> None:
        clock = self.core.clock
        last = await self._send_latest(schedule)
        while not stopping.is_set():
            tick = schedule.next_tick(last)
            if not await _sleep_until(clock, tick, stopping):
                return
            await self._send(schedule, tick)
            last = tick

    async def _send(self, schedule: Schedule, tick: float) -> None:
        try:
            await Queue(self.core, schedule.queue).send(
                schedule.message(tick), dedup_id=schedule.dedup_id(tick)
            )
            self.sent += 1
        except Exception as exc:  # the next tick is tried all the same; another worker may send this one
            log.error("schedule %s: the tick of %s was not sent: %s", schedule.name, _when(tick), exc)


async def _sleep_until(clock: Clock, when: float, stopping: asyncio.Event) -> bool:
    """Sleep on the App's clock until `when`; False if the worker stops first."""
    while (left := when - clock.now()) > 0:
        sleeper = asyncio.ensure_future(clock.sleep(left))
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait([sleeper, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if stopping.is_set():
            return False
    return not stopping.is_set()


def _when(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat()
