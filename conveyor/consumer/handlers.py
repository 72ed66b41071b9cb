"""A consumer's handler, checked when it is registered: it must take `(batch, env)`. An
`async def` runs on the event loop; a plain `def` runs in a worker thread, so a blocking handler
does not stall the loop. Each sync consumer has a thread pool of its own (not the loop's default
executor, whose few threads every consumer would share); a pool starts a thread only when no idle
one is free, and at most `max_concurrency` batches of a consumer run at once, so it holds at most
that many threads."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor import limits as L
from conveyor.consumer.env import Env
from conveyor.consumer.message import MessageBatch
from conveyor.consumer.spec import Handler
from conveyor.errors import InvalidHandler


def is_async(handler: object) -> bool:
    """An async function, or an object whose `__call__` is one."""
    call = type(handler).__call__ if callable(handler) else None
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def checked_handler(queue: str, handler: Any) -> Handler:
    """`handler` ready for the runner: InvalidHandler unless it can be called as `(batch, env)`;
    a sync one is wrapped to run in a thread."""
    name = getattr(handler, "__qualname__", type(handler).__name__)
    if not callable(handler):
        raise InvalidHandler(
            f"the handler of {queue!r} is not callable (it is a {type(handler).__name__!r}); "
            "expected async def handler(batch, env)"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        signature = None  # some builtins have none: accepted, as Python would call them
    if signature is not None:
        try:
            signature.bind(None, None)
        except TypeError as exc:
            raise InvalidHandler(
                f"the handler {name} of {queue!r} cannot be called as handler(batch, env): "
                f"its signature is {name}{signature} ({exc})"
            ) from None
    if is_async(handler):
        return handler  # type: ignore[no-any-return]
    return _in_thread(queue, handler)


def _in_thread(queue: str, handler: Any) -> Handler:
    pool: list[ThreadPoolExecutor] = []  # made on first use: registering starts no thread

    @functools.wraps(handler)
    async def run(batch: MessageBatch, env: Env) -> Any:
        if not pool:
            pool.append(ThreadPoolExecutor(L.MAX_CONCURRENCY, thread_name_prefix=f"conveyor-{queue}"))
        context = contextvars.copy_context()  # as asyncio.to_thread does
        call = functools.partial(context.run, handler, batch, env)
        result = await asyncio.get_running_loop().run_in_executor(pool[0], call)
        if inspect.isawaitable(result):  # a plain callable that returned a coroutine
            return await result
        return result

    return run
