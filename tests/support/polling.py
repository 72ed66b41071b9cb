"""Waiting in tests for something another task or process does, with a bound so a test always ends."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# How often a condition is checked.
POLL_SECONDS = 0.02


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20) -> None:
    """Return once `condition()` is true; fail naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting until {what}") from None
