"""Owned: one task owns a resource that is not safe to share; other tasks send it calls and await
the answers.

    owned = conveyor.Owned(lambda: contextlib.closing(sqlite3.connect("app.db")))
    async with owned:
        rows = await owned.call(lambda db: db.execute("SELECT 1").fetchall())
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from conveyor import limits as L
from conveyor.errors import OwnerClosed

R = TypeVar("R")
T = TypeVar("T")

#: what makes the resource: a function returning a context manager (sync or async) around it
Setup = Callable[[], contextlib.AbstractAsyncContextManager[R] | contextlib.AbstractContextManager[R]]
#: what wraps each turn of calls (e.g. one transaction): a context manager made from the resource
Turn = Callable[[R], contextlib.AbstractAsyncContextManager[Any] | contextlib.AbstractContextManager[Any]]

log = logging.getLogger("conveyor.owned")


@dataclass(eq=False)
class _Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reply: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Owned(Generic[R]):
    """A resource owned by one task: `await owned.call(fn, *args)` runs `fn(resource, *args)` in
    the owner task, one call at a time in arrival order, and returns its result or raises its
    exception in the caller.

    Args:
        setup: returns a context manager (sync or async) whose value is the resource; the
            owner enters it when started and exits it when closed.
        max_waiting: calls that may wait for the owner (default 100); past it `call` waits
            for room (backpressure).
        turn: optional; makes a context manager from the resource that wraps each turn: the
            calls waiting when the owner wakes are served together inside one (for example one
            transaction for many calls). Their answers are handed over once the turn has ended;
            if ending it fails (a commit fails), every call of that turn raises that error.

    `async with owned:` starts the owner and closes it on exit. `close()` stops taking calls
    (`call` then raises OwnerClosed), serves those already waiting, then releases the resource.
    If the setup fails, the owner's exception is raised by `start()` and by every `call`.
    """

    def __init__(
        self, setup: Setup[R], *, max_waiting: int = L.DEFAULT_OWNED_MAX_WAITING, turn: Turn[R] | None = None
    ) -> None:
        self._setup = setup
        self._turn = turn
        self._max_waiting = L.check_int_range("max_waiting", max_waiting, 1, L.MAX_OWNED_MAX_WAITING)
        self._calls: asyncio.Queue[_Call | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = False
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        """True from `start()` until the owner has stopped."""
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        """Calls queued for the owner now (at most `max_waiting`; more callers wait for room)."""
        return 0 if self._calls is None else self._calls.qsize()

    async def start(self) -> None:
        """Start the owner task and wait until the resource is set up (raises the setup's error)."""
        if self._task is not None:
            raise RuntimeError("this Owned was already started")
        loop = asyncio.get_running_loop()
        self._calls = asyncio.Queue(self._max_waiting)
        self._ready = loop.create_future()
        self._task = asyncio.create_task(self._own(), name="conveyor-owned")
        await asyncio.shield(self._ready)

    @overload
    async def call(self, function: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T: ...
    @overload
    async def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...
    async def call(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `function(resource, *args, **kwargs)` in the owner task (awaited if it returns an
        awaitable) and return its result, or raise its exception here. A caller cancelled before
        its call starts withdraws it; one cancelled while it runs leaves it to finish."""
        if self._failure is not None:
            raise self._failure
        if self._calls is None or self._closing:
            raise OwnerClosed("this Owned is not running: start it (async with owned:) before calling it")
        request = _Call(function, args, kwargs)
        await self._calls.put(request)
        if self._task is not None and self._task.done():  # it waited for room while the owner stopped
            self._fail_waiting(self._failure or OwnerClosed("the owner was closed"))
        return await request.reply

    async def close(self) -> None:
        """Stop taking calls, serve those waiting, release the resource; idempotent."""
        if self._task is None or self._calls is None:
            return
        if not self._closing:
            self._closing = True
            if not self._task.done():
                await self._calls.put(None)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Owned[R]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the owner task ----------------------------------------------------------------------

    async def _own(self) -> None:
        assert self._calls is not None and self._ready is not None
        try:
            async with _entered(self._setup()) as resource:
                self._ready.set_result(None)
                await self._serve(resource)
        except BaseException as exc:
            self._failure = exc
            if not self._ready.done():
                self._ready.set_exception(exc)
            self._fail_waiting(exc)
            if not isinstance(exc, Exception):
                raise
            log.debug("the owner stopped with an error", exc_info=exc)

    async def _serve(self, resource: R) -> None:
        assert self._calls is not None
        while True:
            turn = [await self._calls.get()]
            while not self._calls.empty():
                turn.append(self._calls.get_nowait())
            stop = None in turn
            calls = [call for call in turn if call is not None and not call.reply.cancelled()]
            if calls:
                await self._run_turn(resource, calls)
            if stop:
                self._fail_waiting(OwnerClosed("the owner was closed"))
                return

    async def _run_turn(self, resource: R, calls: list[_Call]) -> None:
        answers: list[tuple[_Call, bool, Any]] = []
        try:
            async with _entered(self._turn(resource) if self._turn is not None else None):
                for call in calls:
                    try:
                        result = call.function(resource, *call.args, **call.kwargs)
                        if inspect.isawaitable(result):
                            result = await result
                    except Exception as exc:
                        answers.append((call, False, exc))
                    else:
                        answers.append((call, True, result))
        except Exception as exc:  # the turn could not end (a commit failed): nothing of it stands
            for call in calls:
                _answer(call, False, exc)
            return
        for call, ok, value in answers:
            _answer(call, ok, value)

    def _fail_waiting(self, exc: BaseException) -> None:
        assert self._calls is not None
        while not self._calls.empty():
            call = self._calls.get_nowait()
            if call is not None:
                _answer(call, False, exc)


def _answer(call: _Call, ok: bool, value: Any) -> None:
    if call.reply.done():
        return  # its caller was cancelled
    if ok:
        call.reply.set_result(value)
    else:
        call.reply.set_exception(value)


@contextlib.asynccontextmanager
async def _entered(
    manager: contextlib.AbstractAsyncContextManager[Any] | contextlib.AbstractContextManager[Any] | None,
) -> Any:
    """Enter a sync or async context manager (or none) the same way."""
    if manager is None:
        yield None
    elif isinstance(manager, contextlib.AbstractAsyncContextManager):
        async with manager as value:
            yield value
    else:
        with manager as value:
            yield value


__all__ = ["Owned"]
