"""The last hour of every queue's figures, sampled in the background: what the dashboard charts.

A page view never counts a queue: a sampler reads every queue's stats (`every_queue`, one stats
call per queue) every SAMPLE_INTERVAL_SECONDS and keeps HISTORY_SECONDS of readings. Never more
than SAMPLER_MAX_DUTY of the time goes to reading: a sample that took 2 s waits 20 s for the next.

A queue reports what it holds, not what passed through it, so rates come from the change of its
total (backlog + delayed + in flight) between two samples (see overview.net_rates):
- `net_in`: growth per second: sends minus everything that left, a lower bound of the send rate;
- `net_out`: shrinking per second: acks, dead letters, purges and expiries minus sends, a lower
  bound of what was taken off the queue;
- `dead_lettered`: growth per second of the queue's dead-letter queue, a lower bound of the
  dead-letter rate (a replay out of the dead-letter queue hides what came in meanwhile).
Retries are not visible in counts (a retried message stays in its queue), so no retry rate is
derived here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from conveyor.admin.overview import every_queue
from conveyor.app import App
from conveyor.errors import ConveyorError
from conveyor.types import QueueStats

log = logging.getLogger("conveyor.admin")

# How often the sampler reads every queue, in seconds.
SAMPLE_INTERVAL_SECONDS = 10.0
# How far back the readings go, in seconds (the dashboard's charts span it).
HISTORY_SECONDS = 3_600.0
# The largest share of time spent sampling.
SAMPLER_MAX_DUTY = 0.1


@dataclass(frozen=True, slots=True)
class Reading:
    """Every queue's stats at one moment (`at`: Unix time by the App's clock)."""

    at: float
    stats: dict[str, QueueStats]


@dataclass(frozen=True, slots=True)
class Point:
    """One queue at one reading, with the rates since the reading before (None for the first)."""

    at: float
    backlog: int
    delayed: int
    in_flight: int
    oldest_age_seconds: float
    net_in: float | None
    net_out: float | None
    dead_lettered: float | None


def _rate(before: int, after: int, seconds: float) -> float:
    return max(0.0, (after - before) / seconds)


class QueueHistory:
    """Readings of every queue over the last `keep_seconds`, taken every `interval_seconds` by
    `run()` (or one at a time by `sample()`)."""

    def __init__(
        self,
        app: App,
        *,
        interval_seconds: float = SAMPLE_INTERVAL_SECONDS,
        keep_seconds: float = HISTORY_SECONDS,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError(f"the sample interval must be positive, got {interval_seconds!r} s")
        if not keep_seconds >= interval_seconds:
            raise ValueError(
                f"the history ({keep_seconds!r} s) must span at least one interval ({interval_seconds!r} s)"
            )
        self.app = app
        self.interval_seconds = interval_seconds
        self.keep_seconds = keep_seconds
        self._readings: deque[Reading] = deque()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- reading -----------------------------------------------------------------------------

    async def sample(self) -> Reading:
        """Read every queue now and keep the reading (one sample at a time)."""
        async with self._lock:
            rows = await every_queue(self.app)
            reading = Reading(self.app.clock.now(), {info.name: stats for info, stats in rows})
            self._readings.append(reading)
            horizon = reading.at - self.keep_seconds
            while self._readings and self._readings[0].at < horizon:
                self._readings.popleft()
            return reading

    async def latest(self) -> Reading:
        """The last reading; taken now if there is none yet (the sampler has not run)."""
        if self._readings:
            return self._readings[-1]
        return await self.sample()

    def readings(self) -> list[Reading]:
        return list(self._readings)

    def points(self, queue: str, dead_letter_queue: str | None = None) -> list[Point]:
        """`queue` at every reading that has it, oldest first, with its rates (module docstring)."""
        return list(self._points(queue, dead_letter_queue))

    def _points(self, queue: str, dead_letter_queue: str | None) -> Iterator[Point]:
        previous: Reading | None = None
        for reading in self._readings:
            stats = reading.stats.get(queue)
            if stats is None:
                previous = None
                continue
            net_in = net_out = dead_lettered = None
            before = previous.stats.get(queue) if previous is not None else None
            if previous is not None and before is not None and reading.at > previous.at:
                seconds = reading.at - previous.at
                net_in = _rate(before.total, stats.total, seconds)
                net_out = _rate(stats.total, before.total, seconds)
                if dead_letter_queue is not None:
                    dlq_before = previous.stats.get(dead_letter_queue)
                    dlq_after = reading.stats.get(dead_letter_queue)
                    if dlq_before is not None and dlq_after is not None:
                        dead_lettered = _rate(dlq_before.total, dlq_after.total, seconds)
            yield Point(
                at=reading.at,
                backlog=stats.backlog,
                delayed=stats.delayed,
                in_flight=stats.in_flight,
                oldest_age_seconds=stats.oldest_age_seconds if stats.total else 0.0,
                net_in=net_in,
                net_out=net_out,
                dead_lettered=dead_lettered,
            )
            previous = reading

    # -- running in the background -----------------------------------------------------------

    async def run(self) -> None:
        """Sample until cancelled; a failed sample is logged and the next one tried on time."""
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except ConveyorError as exc:
                log.warning("could not sample the queues: %s", " ".join(str(exc).split()))
            except Exception:
                log.exception("could not sample the queues")
            took = time.monotonic() - started
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a driver swallowed the cancel (asyncio.wait_for on 3.11 can): stop all the same
                raise asyncio.CancelledError
            await asyncio.sleep(max(self.interval_seconds, took / SAMPLER_MAX_DUTY) - took)

    def start(self) -> None:
        """Run the sampler in the background of the running event loop (once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="conveyor-queue-history")

    async def close(self) -> None:
        """Stop the sampler (the App must still be open while it runs)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
