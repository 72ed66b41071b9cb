"""What tests share about apps: the limits they run with, a factory type, and moving time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import conveyor
from conveyor.limits import Limits
from conveyor.testing import FakeClock

# Tests may set retention as low as this, so retention runs in seconds on every engine.
TEST_LIMITS = Limits(min_retention_seconds=1)


class TimeMachine:
    """Moves time forward: instantly on engines that obey the app's clock, by sleeping on engines
    that use their server's clock. Tests keep their delays short for the second kind."""

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock

    async def advance(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)


AppFactory = Callable[..., Awaitable[conveyor.App]]
