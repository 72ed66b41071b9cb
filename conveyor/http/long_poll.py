"""Long-poll pulls over HTTP: a pull with `wait_ms` waits on the engine's wake-up, and a server
shutting down answers every waiting pull at once (empty) rather than holding its shutdown until
their deadlines (up to 20 s each)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from conveyor.producer import PulledMessage, Queue


class LongPolls:
    """The waiting pulls of one API; `stop()` (the server shutting down) ends them all."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Answer every waiting pull now, and every later one at once."""
        self._stopping.set()

    async def pull(
        self, queue: Queue, batch_size: int | None, visibility_timeout: float | None, wait_ms: int
    ) -> list[PulledMessage]:
        """`queue.pull`, waiting up to `wait_ms` milliseconds for a message unless the server
        stops first. A pull cancelled while waiting leases nothing (Backend.wait_and_lease)."""
        wait = 0.0 if self.stopping else wait_ms / 1000
        if wait == 0:
            return await queue.pull(batch_size, visibility_timeout)
        pulling = asyncio.ensure_future(queue.pull(batch_size, visibility_timeout, wait=wait))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([pulling, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not pulling.done():
                pulling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pulling
        if pulling.cancelled():
            return []
        return pulling.result()


def stop_long_polls(api: Any) -> None:
    """Stop the waiting pulls of `api` if it is conveyor's (create_api); else do nothing."""
    state = getattr(api, "state", None)
    polls = getattr(state, "long_polls", None)
    if isinstance(polls, LongPolls):
        polls.stop()
