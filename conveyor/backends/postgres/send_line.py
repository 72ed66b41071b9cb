"""A pooled connection kept for lone sends while they come one after another.

A lone sender's loop pays for every statement's trip through the pool: a checkout (a lock, a
deque, the connection's state checked) and a return (its transaction status checked, waiters
served), a sixth of a send's CPU in the client. One connection held between sends does without
it. A pause of IDLE_SECONDS gives it back by itself (a timer), so an idle producer holds no
pool slot; a send after a while of sends gives it back and takes one from the pool (whose checks
and lifetime limit then apply); so does any error (the pool discards a broken
connection; the caller retries through the pool). A send that finds it in use (a second writer
on the same engine) takes a pooled connection instead. A pool of one connection keeps none.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# Sends this far apart give the connection back in between.
IDLE_SECONDS = 1.0
# The connection goes back to the pool after this long in hand, however busy.
HOLD_SECONDS = 60.0

Conn = psycopg.AsyncConnection[Any]


class SendLine:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._connection: Conn | None = None
        self._taken_at = 0.0
        self._last_used = 0.0
        #: a send is on the line (another writer takes a pooled connection)
        self.busy = False
        # one timer while a connection is kept (not one per send): it gives the connection back
        # once sends have paused for IDLE_SECONDS, or looks again when one came meanwhile
        self._idle_timer: asyncio.TimerHandle | None = None
        self._giving_back: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """The kept connection (taken from the pool when there is none, or it was given back)."""
        self.busy = True
        try:
            now = time.monotonic()
            if self._connection is not None and (
                now - self._last_used > IDLE_SECONDS or now - self._taken_at > HOLD_SECONDS
            ):
                await self.close()
            connection = self._connection
            if connection is None:
                connection = self._connection = await self._pool.getconn()
                self._taken_at = now
                self._watch_idle(IDLE_SECONDS)
            try:
                yield connection
            except BaseException:
                await self.close()  # the pool checks it: a broken or busy one is discarded
                raise
            self._last_used = time.monotonic()
        finally:
            self.busy = False

    def _watch_idle(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        if self._connection is None:
            return
        idle = time.monotonic() - self._last_used
        if self.busy or idle < IDLE_SECONDS:  # a send came since: look again when it would be idle
            self._watch_idle(max(IDLE_SECONDS - idle, 0.0) if not self.busy else IDLE_SECONDS)
            return
        connection, self._connection = self._connection, None
        task = asyncio.get_running_loop().create_task(self._pool.putconn(connection))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def close(self) -> None:
        """Give the connection back to the pool (before the pool is closed)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.putconn(connection)
        if self._giving_back:  # a connection the timer is giving back: done before the pool closes
            await asyncio.gather(*self._giving_back, return_exceptions=True)
