"""Settle coalescing: the batches of one consumer that finish while a settle is under way are
settled together, in the next engine call.

Small batches then cost one settle (one transaction, one commit) per group instead of one per
batch. A lone batch settles at once: nothing waits for a group to fill. The batch that finds no
settle under way writes the group itself (no extra task); the others wait for their share of
the result: counts and the stale lease ids that were theirs.
"""

from __future__ import annotations

import asyncio
import logging

from conveyor.core import Core
from conveyor.core.group_commit import take_group
from conveyor.types import Settlement, SettleResult

log = logging.getLogger("conveyor.consumer")

# A settle the engine fails is tried this many times in all, waiting SETTLE_RETRY_FIRST_SECONDS
# and then twice as long each time (at most SETTLE_RETRY_MAX_SECONDS); after that the leases
# expire and the messages are delivered again.
SETTLE_ATTEMPTS = 5
SETTLE_RETRY_FIRST_SECONDS = 0.1
SETTLE_RETRY_MAX_SECONDS = 2.0
# At most this many outcomes go into one settle call; the rest wait for the next.
MAX_GROUP_OUTCOMES = 1_000

_Waiting = tuple[Settlement, "asyncio.Future[SettleResult | None]"]


class SettleGroup:
    def __init__(self, core: Core, queue: str, max_group_outcomes: int = MAX_GROUP_OUTCOMES) -> None:
        self._core = core
        self._queue = queue
        self._max = max_group_outcomes
        self._waiting: list[_Waiting] = []
        self._writing = False

    async def settle(self, settlement: Settlement) -> SettleResult | None:
        """Write one batch's outcomes; its result, or None when every attempt failed."""
        future: asyncio.Future[SettleResult | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((settlement, future))
        if not self._writing:
            self._writing = True
            try:
                while self._waiting:
                    await self._settle_taken(self._take_group())
            finally:
                self._writing = False
                # cancelled mid-write: those still waiting wait no more (their leases expire)
                for _, left in self._waiting:
                    if not left.done():
                        left.set_result(None)
                self._waiting.clear()
        return await future

    def _take_group(self) -> list[_Waiting]:
        return take_group(self._waiting, lambda waiting: _size(waiting[0]), self._max)

    async def _settle_taken(self, group: list[_Waiting]) -> None:
        result: SettleResult | None = None
        try:
            result = await self._settle_with_retries(_merged([settlement for settlement, _ in group]))
        finally:
            # cancelled (a shutdown past its grace), the group gets None: its leases expire
            for settlement, future in group:
                if not future.done():
                    future.set_result(None if result is None else _share(settlement, result))

    async def _settle_with_retries(self, settlement: Settlement) -> SettleResult | None:
        delay = SETTLE_RETRY_FIRST_SECONDS
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                return await self._core.settle(self._queue, settlement)
            except Exception:
                size = _size(settlement)
                log.exception("settling %d outcomes on %s failed (try %d)", size, self._queue, attempt)
                if attempt < SETTLE_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SETTLE_RETRY_MAX_SECONDS)
        return None


def _size(settlement: Settlement) -> int:
    return len(settlement.acks) + len(settlement.retries) + len(settlement.dead_letters)


def _merged(settlements: list[Settlement]) -> Settlement:
    if len(settlements) == 1:
        return settlements[0]
    merged = Settlement()
    for settlement in settlements:
        merged.acks.extend(settlement.acks)
        merged.retries.extend(settlement.retries)
        merged.dead_letters.extend(settlement.dead_letters)
    return merged


def _share(settlement: Settlement, result: SettleResult) -> SettleResult:
    """One batch's part of a group's result: its own stale leases, and counts without them."""
    if not result.stale:
        return SettleResult(len(settlement.acks), len(settlement.retries), len(settlement.dead_letters))
    stale = set(result.stale)
    acks = [lease for lease in settlement.acks if lease in stale]
    retries = [retry.lease_id for retry in settlement.retries if retry.lease_id in stale]
    dead = [letter.lease_id for letter in settlement.dead_letters if letter.lease_id in stale]
    return SettleResult(
        len(settlement.acks) - len(acks),
        len(settlement.retries) - len(retries),
        len(settlement.dead_letters) - len(dead),
        [*acks, *retries, *dead],
    )
