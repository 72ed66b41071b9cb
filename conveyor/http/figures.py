"""Queue figures for pulls and /metrics, read in the background: a request never counts a queue.

Counting a queue costs time that grows with it (hundreds of milliseconds at a million messages on
SQLite), so a pull that counted would slow down as the backlog grows. Instead a request answers
with the last reading of the queue's stats; when that reading is older than `refresh_seconds`,
the request also starts a new one in the background (one at a time per queue, and never more
than STATS_MAX_DUTY of the time), for the requests after it. Only a queue's very first reading
is waited for (once, shared by every request that asks meanwhile). Nobody asking, nothing is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conveyor.app import App
from conveyor.errors import ConveyorError, QueueNotFound
from conveyor.types import QueueStats

log = logging.getLogger("conveyor.http")

# How old a queue's figures may get before a request starts reading them again, in seconds.
STATS_REFRESH_SECONDS = 2.0
# The largest share of time spent reading figures: a reading that took 0.3 s waits 3 s for the next.
STATS_MAX_DUTY = 0.1
# The key under which the reading of every queue (for /metrics) is kept.
_EVERY = "*"


@dataclass(frozen=True, slots=True)
class Figures:
    """One reading of a queue's stats, and when it was taken (Unix time, by the App's clock)."""

    stats: QueueStats
    read_at: float

    @property
    def unacknowledged(self) -> int:
        """Cloudflare's `backlog_count`: every message not yet acknowledged (ready, delayed, leased)."""
        return self.stats.total

    @property
    def oldest_timestamp_ms(self) -> int:
        """When the oldest message was sent, in Unix milliseconds; 0 when the queue is empty."""
        if not self.stats.total:
            return 0
        return int((self.read_at - self.stats.oldest_age_seconds) * 1000)

    def metrics_document(self) -> dict[str, int]:
        """Cloudflare's `metadata.metrics`."""
        return {
            "backlog_count": self.unacknowledged,
            "backlog_bytes": self.stats.bytes,
            "oldest_message_timestamp_ms": self.oldest_timestamp_ms,
        }


class QueueFigures:
    """The last reading of each queue's stats, read again in the background once it is stale."""

    def __init__(self, app: App, refresh_seconds: float = STATS_REFRESH_SECONDS) -> None:
        """`refresh_seconds=0`: no cache, every ask reads (exact figures; each costs a count)."""
        if not refresh_seconds >= 0:
            raise ValueError(f"stats_refresh_seconds must be 0 or more, got {refresh_seconds!r}")
        self.app = app
        self.refresh_seconds = refresh_seconds
        self._figures: dict[str, Figures] = {}
        self._names: list[str] = []  # every queue, as last listed for /metrics
        self._due: dict[str, float] = {}  # key -> monotonic time its next reading may start
        self._reading: dict[str, asyncio.Task[None]] = {}

    async def of(self, name: str) -> Figures:
        """The figures of queue `name` (QueueNotFound when it does not exist)."""
        figures = self._figures.get(name)
        if figures is None or not self.refresh_seconds:
            await self._read(name, lambda: self._read_queue(name))
            return self._figures[name]
        self._refresh_if_due(name, lambda: self._read_queue(name))
        return figures

    async def every(self) -> list[Figures]:
        """The figures of every queue, by name."""
        if _EVERY not in self._due or not self.refresh_seconds:
            await self._read(_EVERY, self._read_every)
        else:
            self._refresh_if_due(_EVERY, self._read_every)
        return [self._figures[name] for name in self._names if name in self._figures]

    def forget(self, name: str) -> None:
        """Drop what is known of `name` (deleted or purged): the next ask reads it afresh."""
        self._figures.pop(name, None)
        self._due.pop(name, None)
        self._due.pop(_EVERY, None)

    async def close(self) -> None:
        """Wait for the readings in progress (the App must still be open)."""
        for task in list(self._reading.values()):
            with contextlib.suppress(Exception):
                await task

    # -- reading -----------------------------------------------------------------------------

    async def _read(self, key: str, read: Callable[[], Awaitable[None]]) -> None:
        """Read now (or join the reading in progress) and wait for it; errors reach the caller."""
        task = self._reading.get(key) or self._start(key, read, background=False)
        await asyncio.shield(task)

    def _refresh_if_due(self, key: str, read: Callable[[], Awaitable[None]]) -> None:
        if key not in self._reading and time.monotonic() >= self._due.get(key, 0.0):
            self._start(key, read, background=True)

    def _start(
        self, key: str, read: Callable[[], Awaitable[None]], *, background: bool
    ) -> asyncio.Task[None]:
        async def timed() -> None:
            started = time.monotonic()
            try:
                await read()
            finally:
                took = time.monotonic() - started
                self._due[key] = started + max(self.refresh_seconds, took / STATS_MAX_DUTY)

        task = asyncio.get_running_loop().create_task(timed())
        self._reading[key] = task
        task.add_done_callback(lambda _: self._reading.pop(key, None))
        # a waited-for reading's error reaches its caller; a background one's is logged here
        task.add_done_callback(_log_failure if background else _retrieve)
        return task

    async def _read_queue(self, name: str) -> None:
        try:
            stats = await self.app.queue(name).stats()
        except QueueNotFound:
            self._figures.pop(name, None)
            raise
        self._figures[name] = Figures(stats, self.app.clock.now())  # the clock the engine ages by

    async def _read_every(self) -> None:
        names = sorted(info.name for info in await self.app.list_queues())
        for name in names:
            with contextlib.suppress(QueueNotFound):  # deleted meanwhile
                await self._read_queue(name)
        self._names = names


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved even if every waiter was cancelled


def _log_failure(task: asyncio.Task[None]) -> None:
    """A background reading that failed keeps the last figures; the next stale ask tries again."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, QueueNotFound) or exc is None:
        return
    if isinstance(exc, ConveyorError):
        log.warning("could not refresh queue figures: %s", " ".join(str(exc).split()))
    else:
        log.error("could not refresh queue figures", exc_info=exc)
