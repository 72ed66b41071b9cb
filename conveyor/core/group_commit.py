"""Group commit: concurrent sends in one process are written together in one engine call.

Each caller still returns only once its own messages are durable. Requests that arrive while a
write is under way join the next write. A send with no company (nothing under way, and the last
write carried no one else's request: a lone sender's loop) or after a quiet spell is written at
once from its caller's task, with no hop through the flusher task; when the engine committed the
last such write without giving the event loop a turn (SQLite inline, memory), the send first
gives other tasks one, and joins whatever they submitted in it. When a
group write fails, its requests are written one by one so that one caller's bad request (say, an
unknown queue) fails only that caller; an unreachable engine fails them all (Core has already
tried the group again for a while).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from conveyor.errors import BackendUnavailable
from conveyor.types import OutgoingMessage

Write = Callable[[Sequence[OutgoingMessage]], Awaitable[list[str]]]
_Request = tuple[Sequence[OutgoingMessage], "asyncio.Future[list[str]]"]
R = TypeVar("R")

# At most this many messages go into one grouped write.
MAX_GROUP_MESSAGES = 1_000
# A send that finds no write under way writes at once, by itself, when the last write carried
# only one request (a lone sender: nothing is likely to join it, and the hop through the flusher
# task costs a task and a turn of the event loop per send) or none finished this recently (a quiet
# spell). Sends in a busy stretch, right after a write that carried several requests or had others
# waiting behind it, go through the flusher, which groups everything submitted in the same turn of
# the event loop: written alone, the first of them would split each group in two.
QUIET_SECONDS = 0.001


class GroupCommitter:
    def __init__(self, write: Write, max_group_messages: int = MAX_GROUP_MESSAGES) -> None:
        self._store = write
        self._max = max_group_messages
        self._pending: list[_Request] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing_alone = False
        self._last_write_end = float("-inf")
        # whether the last write had company: it carried several requests, or some waited behind it
        self._busy = False
        # whether the last lone write returned without giving the event loop a turn (an engine
        # that commits inline: SQLite, memory): the next lone send gives other tasks that turn
        self._owes_turn = False

    async def submit(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Write `messages`; the ids they are stored under, in order."""
        loop = asyncio.get_running_loop()
        if self._flusher is None and not self._writing_alone:
            if not self._busy or loop.time() - self._last_write_end > QUIET_SECONDS:
                return await self._write_alone(messages)
            self._flusher = asyncio.create_task(self._flush())
        future: asyncio.Future[list[str]] = loop.create_future()
        self._pending.append((messages, future))
        # The flusher task does the write; this future only carries its outcome, so a caller that
        # gives up cancels nothing but its own wait (no shield: it cost a quarter of a send's
        # time in the event loop with 100 concurrent senders).
        return await future

    async def _write_alone(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """A send with no company writes its own messages at once, from its caller's task (no
        hop through the flusher task). Requests arriving meanwhile wait, and are written together
        by the flusher once this write is done."""
        if self._owes_turn:
            joined = await self._give_a_turn(messages)
            if joined is not None:
                return await joined
        self._writing_alone = True
        loop = asyncio.get_running_loop()
        # runs at the loop's next turn: if it has not when the write returns, the write never gave
        # other tasks a turn (an engine that may commit inline: SQLite, memory), so no sender could
        # have joined it; the next lone send then gives them that turn first
        suspended: list[bool] = []
        turn = loop.call_soon(suspended.append, True)
        try:
            return await self._store(messages)
        finally:
            turn.cancel()
            self._owes_turn = not suspended
            self._after_lone_write(loop)

    async def _give_a_turn(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[list[str]] | None:
        """Let other tasks run once before a lone write (the last one gave them no turn): a send
        loop must not starve them, and senders among them must be grouped, not kept out. What
        they submit meanwhile waits; if anything did, this request goes first into the flusher's
        next group and its future is returned. None: still alone, write at once."""
        self._writing_alone = True  # sends submitted during the turn wait for this one
        try:
            await asyncio.sleep(0)
        finally:
            self._owes_turn = self._writing_alone = False
            company = bool(self._pending)
            if company and self._flusher is None:  # also when this caller gave up meanwhile
                self._flusher = asyncio.create_task(self._flush())
        if not company:
            return None
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending.insert(0, (messages, future))
        return future

    def _after_lone_write(self, loop: asyncio.AbstractEventLoop) -> None:
        self._writing_alone = False
        self._last_write_end = loop.time()
        self._busy = bool(self._pending)
        if self._pending and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._take_group()
                await self._write_group(group)
                self._busy = len(group) > 1 or bool(self._pending)
        finally:
            self._flusher = None
            self._last_write_end = asyncio.get_running_loop().time()

    def _take_group(self) -> list[_Request]:
        return take_group(self._pending, lambda request: len(request[0]), self._max)

    async def _write_group(self, group: list[_Request]) -> None:
        try:
            ids = await self._store([message for messages, _ in group for message in messages])
        except Exception as exc:
            # An unreachable engine fails every request alike; and a write that may have been
            # stored must not be repeated in other groupings (NATS deduplicates a repeat by the
            # grouping's first id).
            if len(group) == 1 or isinstance(exc, BackendUnavailable):
                for _, future in group:
                    _fail(future, exc)
                return
            for messages, future in group:
                try:
                    own = await self._store(messages)
                except Exception as single_exc:
                    _fail(future, single_exc)
                else:
                    _succeed(future, own)
        else:
            start = 0
            for messages, future in group:
                _succeed(future, ids[start : start + len(messages)])
                start += len(messages)


def take_group(pending: list[R], size: Callable[[R], int], limit: int) -> list[R]:
    """Take requests from the front of `pending` while their sizes add up to at most `limit`
    (always at least one, however big)."""
    group: list[R] = []
    count = 0
    while pending and (not group or count + size(pending[0]) <= limit):
        request = pending.pop(0)
        group.append(request)
        count += size(request)
    return group


def _succeed(future: asyncio.Future[list[str]], ids: list[str]) -> None:
    if not future.done():
        future.set_result(ids)


def _fail(future: asyncio.Future[list[str]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
