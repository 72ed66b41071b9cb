"""How many batches of one consumer may run at once: fixed, or autoscaled from 1 to a bound."""

from __future__ import annotations

import asyncio

from conveyor.limits import AUTOSCALE_MAX_CONCURRENCY


class ConcurrencyLimit:
    """Slots for running batches. With `fixed=None` the limit autoscales: it grows by one while
    full batches of first deliveries keep arriving with every slot busy (the backlog grows), and
    shrinks by one whenever the queue runs dry. Retries are not load."""

    def __init__(self, fixed: int | None, bound: int = AUTOSCALE_MAX_CONCURRENCY) -> None:
        self.autoscale = fixed is None
        self.bound = bound if fixed is None else fixed
        self.limit = 1 if fixed is None else fixed
        self.running = 0
        self._changed = asyncio.Condition()

    def try_acquire(self) -> bool:
        """Take a slot without waiting if one is free."""
        if self.running < self.limit:
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.running < self.limit)
            self.running += 1

    async def release(self) -> None:
        async with self._changed:
            self.running -= 1
            self._changed.notify_all()

    async def observe(self, *, fresh: int, batch_size: int, drained: bool) -> None:
        """Adjust after a lease: `fresh` first deliveries out of a requested `batch_size`."""
        if not self.autoscale:
            return
        async with self._changed:
            if drained:
                self.limit = max(1, self.limit - 1)
            elif fresh >= batch_size and self.running >= self.limit and self.limit < self.bound:
                self.limit += 1
                self._changed.notify_all()
