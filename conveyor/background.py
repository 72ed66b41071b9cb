"""Send messages after the HTTP response: the `ctx.waitUntil(queue.send(...))` of a Worker.

A handler that must answer fast (a redirect, a webhook ack) hands its message to a
`BackgroundSender` instead of awaiting the queue. The send runs in the background; a queue error
is logged and counted, never turned into a failed response; and on shutdown `flush()` awaits
every send still pending (within a timeout), so nothing is dropped. With Starlette or FastAPI:

    clicks = app.queue("link-clicks", schema=QueueMessage)
    sender = BackgroundSender(clicks)
    api = Starlette(routes=..., lifespan=sender.lifespan)     # flushes pending sends on shutdown

    async def redirect(request: Request) -> Response:
        event = {...}
        # the send starts once the response has gone out (Starlette's BackgroundTask) and the
        # connection is free at once: the task only schedules the send
        return RedirectResponse(url, 302, background=sender.after_response(event))

`sender.send(body)` schedules at once instead (for code that has no response object to attach a
task to). Both are tracked the same way: `pending`, `sent`, `failed`, `dropped`.

Starlette is needed only for `after_response` (`pip install 'conveyor[http]'`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.types import ContentType

if TYPE_CHECKING:
    from starlette.background import BackgroundTask

log = logging.getLogger("conveyor.background")

# How long `flush()` waits for pending sends by default before abandoning them.
DEFAULT_FLUSH_TIMEOUT = 10.0


class Sendable(Protocol):
    """What a BackgroundSender sends to: a `conveyor.Queue`, or anything with its `send`."""

    @property
    def name(self) -> str: ...

    async def send(
        self, body: Any, *, delay_seconds: float | None = None, content_type: ContentType = "json"
    ) -> str: ...


class BackgroundSender:
    """Fire-and-track sends to one queue, flushed on shutdown.

    `flush_timeout` bounds how long `flush()` (and so the lifespan's shutdown) waits for sends
    still pending; those still running after it are cancelled, logged and counted as `dropped`.
    """

    def __init__(self, queue: Sendable, *, flush_timeout: float = DEFAULT_FLUSH_TIMEOUT) -> None:
        if flush_timeout < 0:
            raise ValueError(f"flush_timeout must be >= 0, got {flush_timeout}")
        self.queue = queue
        self.flush_timeout = flush_timeout
        #: sends that completed / raised / were abandoned by a flush that timed out
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: BaseException | None = None
        self._pending: set[asyncio.Task[str | None]] = set()

    def __repr__(self) -> str:
        return (
            f"BackgroundSender({self.queue.name!r}, pending={self.pending}, sent={self.sent}, "
            f"failed={self.failed}, dropped={self.dropped})"
        )

    @property
    def pending(self) -> int:
        """Sends scheduled and not finished yet."""
        return len(self._pending)

    def send(
        self, body: Any, *, delay_seconds: float | None = None, content_type: ContentType = "json"
    ) -> asyncio.Task[str | None]:
        """Schedule `queue.send(body)` and return at once; the task yields the id, or None on error.

        Must be called with an event loop running (inside a request handler, say). Awaiting the
        returned task is optional: the sender keeps a reference until it finishes.
        """
        task = asyncio.get_running_loop().create_task(
            self._send(body, delay_seconds, content_type), name=f"conveyor-send:{self.queue.name}"
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def after_response(
        self, body: Any, *, delay_seconds: float | None = None, content_type: ContentType = "json"
    ) -> BackgroundTask:
        """A Starlette `BackgroundTask` that schedules the send once the response has been sent.

        Pass it as a response's `background=`. The task only schedules, so the request cycle (and
        a keep-alive connection) is not held up by the queue either.
        """
        from starlette.background import BackgroundTask

        return BackgroundTask(self._schedule, body, delay_seconds, content_type)

    async def _schedule(self, body: Any, delay_seconds: float | None, content_type: ContentType) -> None:
        self.send(body, delay_seconds=delay_seconds, content_type=content_type)

    async def _send(self, body: Any, delay_seconds: float | None, content_type: ContentType) -> str | None:
        try:
            message_id = await self.queue.send(body, delay_seconds=delay_seconds, content_type=content_type)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # the response has gone already: an error here must only be seen, never raised
            self.failed += 1
            self.last_error = exc
            log.error("background send to %s failed: %s: %s", self.queue.name, type(exc).__name__, exc)
            return None
        self.sent += 1
        return message_id

    async def flush(self, timeout: float | None = None) -> int:
        """Wait for every pending send, including ones scheduled meanwhile; returns how many were
        abandoned because `timeout` (default: `flush_timeout`) ran out."""
        timeout = self.flush_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._pending), timeout=remaining)
        abandoned = set(self._pending)
        if not abandoned:
            return 0
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
        self.dropped += len(abandoned)
        log.error(
            "%d background sends to %s were still pending after %.1f s and were dropped",
            len(abandoned),
            self.queue.name,
            timeout,
        )
        return len(abandoned)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette/FastAPI `lifespan=` that flushes pending sends on shutdown.

        Inside a lifespan of your own, use `async with sender.lifespan(): yield`.
        """
        try:
            yield
        finally:
            await self.flush()


__all__ = ["DEFAULT_FLUSH_TIMEOUT", "BackgroundSender", "Sendable"]
