"""Helpers for users' tests: a fake clock, running consumers until the queues are drained, and
what a queue holds. The pytest plugin (conveyor/pytest_plugin.py) offers them as fixtures.

clock = FakeClock()
async with App("memory://", clock=clock) as app:
    await app.queue("q").send({"n": 1}, delay_seconds=60)
    clock.advance(60)                    # no sleeping
    await drain(app)                     # runs every consumer until nothing is left to do
    assert await sent(app, "emails") == [...]   # bodies in a queue, not leased
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from conveyor.app import App
from conveyor.errors import QueueNotFound
from conveyor.schedules import Scheduler

# How long `drain` waits at most before giving up.
DEFAULT_DRAIN_TIMEOUT = 30.0
# The most messages `sent` returns.
DEFAULT_SENT_LIMIT = 1_000


class FakeClock:
    """A clock that moves only when told to: `App("memory://", clock=FakeClock())`.

    Engines with a local clock (memory, SQLite) obey it, so delays, retry delays, leases and
    retention take no real time. PostgreSQL and Redis use their server's clock and ignore it.
    `start` is seconds since the epoch (default: now).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        """The clock's time, seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every `sleep` that came due; ValueError if negative."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._now]
        for _, future in due:
            if not future.done():
                future.get_loop().call_soon_threadsafe(_wake, future)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced past now + `seconds`."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, future))
        await future


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def drain(app: App, *, timeout: float = DEFAULT_DRAIN_TIMEOUT, queues: list[str] | None = None) -> int:
    """Run the app's consumers until their queues hold nothing ready or in flight; returns how many
    messages were handled. Delayed messages stay (advance a FakeClock to release them).
    Schedules send their tick due now first (the latest within its catch_up, once per tick), as a
    worker does when it starts.

    Partial batches are handed over as soon as a queue runs dry, so no test waits for
    `max_batch_timeout`. Raises TimeoutError if the queues are not drained within `timeout`
    seconds (default 30). `queues` limits the run to the consumers of those queues.
    """
    if app.schedules:
        # ticks due now are sent first, so the run below cannot end before they are queued
        await Scheduler(app.core, app.schedules).send_due()
    # max_batch_timeout 0: a partial batch is handed over as soon as its queue runs dry
    specs = [
        dataclasses.replace(spec, max_batch_timeout=0)
        for spec in app.consumers
        if queues is None or spec.queue in queues
    ]
    return await app.worker(specs, shutdown_grace=timeout).run_until_idle(timeout)


async def sent(app: App, queue: str, *, limit: int = DEFAULT_SENT_LIMIT) -> list[Any]:
    """The bodies of the messages in `queue` now (waiting, delayed or leased), oldest first, at
    most `limit` (1-1,000); [] if the queue does not exist. Nothing is leased: what a consumer
    sent to a queue that no consumer of the test reads is all there."""
    try:
        return [message.body for message in await app.queue(queue).peek(limit)]
    except QueueNotFound:
        return []


__all__ = ["FakeClock", "drain", "sent"]
