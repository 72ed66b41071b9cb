"""Group commit: concurrent sends in one process are written together in one engine call.

Each caller still returns only once its own messages are durable. Requests that arrive while a
write is under way join the next write. When a group write fails, its requests are written one
by one so that one caller's bad request (say, an unknown queue) fails only that caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from conveyor.types import OutgoingMessage

Write = Callable[[Sequence[OutgoingMessage]], Awaitable[None]]
R = TypeVar("R")

# At most this many messages go into one grouped write.
MAX_GROUP_MESSAGES = 1_000


class GroupCommitter:
    def __init__(self, write: Write, max_group_messages: int = MAX_GROUP_MESSAGES) -> None:
        self._write = write
        self._max = max_group_messages
        self._pending: list[tuple[Sequence[OutgoingMessage], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, messages: Sequence[OutgoingMessage]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((messages, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # shield: a caller that gives up must not cancel the write of everyone else's messages
        await asyncio.shield(future)

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._take_group()
                await self._write_group(group)
        finally:
            self._flusher = None

    def _take_group(self) -> list[tuple[Sequence[OutgoingMessage], asyncio.Future[None]]]:
        return take_group(self._pending, lambda request: len(request[0]), self._max)

    async def _write_group(self, group: list[tuple[Sequence[OutgoingMessage], asyncio.Future[None]]]) -> None:
        try:
            await self._write([message for messages, _ in group for message in messages])
        except Exception as exc:
            if len(group) == 1:
                _fail(group[0][1], exc)
                return
            for messages, future in group:
                try:
                    await self._write(messages)
                except Exception as single_exc:
                    _fail(future, single_exc)
                else:
                    _succeed(future)
        else:
            for _, future in group:
                _succeed(future)


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


def _succeed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
