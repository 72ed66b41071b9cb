"""Settle coalescing: the batches of one consumer that finish while a settle is under way are
settled together, in the next engine call.

Small batches then cost one settle (one transaction, one commit) per group instead of one per
batch. A lone batch settles at once: nothing waits for a group to fill. The batch that finds no
settle under way writes the group itself (no extra task); the others wait for their share of
the result: counts and the stale lease ids that were theirs.

A failing settle never holds back other outcomes: an unreachable engine is tried again (one log
line per try); any other error splits the group, so that each batch settles on its own, and a
batch's dead letters apart from its acks and retries. A dead letter whose queue is missing has
it created again (when the App creates queues on first use); otherwise the message stays in its
queue, retried every DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS, with one ERROR line per interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from conveyor.core import Core
from conveyor.core.group_commit import take_group
from conveyor.errors import BackendUnavailable, QueueNotFound
from conveyor.types import Retry, Settlement, SettleResult

log = logging.getLogger("conveyor.consumer")

# A settle the engine fails is tried this many times in all, waiting SETTLE_RETRY_FIRST_SECONDS
# and then twice as long each time (at most SETTLE_RETRY_MAX_SECONDS); after that the leases
# expire and the messages are delivered again.
SETTLE_ATTEMPTS = 5
SETTLE_RETRY_FIRST_SECONDS = 0.1
SETTLE_RETRY_MAX_SECONDS = 2.0
# At most this many outcomes go into one settle call; the rest wait for the next.
MAX_GROUP_OUTCOMES = 1_000
# While a dead-letter queue is missing (and the App does not create queues on first use), a
# message due for it is retried after this many seconds instead, and one ERROR line per this
# interval names the missing queue.
DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS = 60.0

_Waiting = tuple[Settlement, "asyncio.Future[SettleResult | None]"]


class SettleGroup:
    def __init__(self, core: Core, queue: str, max_group_outcomes: int = MAX_GROUP_OUTCOMES) -> None:
        self._core = core
        self._queue = queue
        self._max = max_group_outcomes
        self._waiting: list[_Waiting] = []
        self._writing = False
        # missing dead-letter queue -> when it was last reported (monotonic seconds)
        self._missing_reported: dict[str, float] = {}

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
        settlements = [settlement for settlement, _ in group]
        results: list[SettleResult | None] = [None] * len(group)
        try:
            results = await self._settle_all(settlements)
        finally:
            # cancelled (a shutdown past its grace), the group gets None: its leases expire
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _settle_all(self, settlements: list[Settlement]) -> list[SettleResult | None]:
        """Each batch's result (None: its leases expire). A merged settle that fails for any
        reason but an unreachable engine is split, so one batch's bad outcome fails only itself."""
        if len(settlements) == 1:
            return [await self._settle_alone(settlements[0])]
        merged = _merged(settlements)
        try:
            result = await self._settle_with_retries(merged)
        except Exception as exc:
            log.warning(
                "settling %d outcomes of %d batches on %s failed (%s): settling each batch on its own",
                _size(merged),
                len(settlements),
                self._queue,
                _cause(exc),
            )
            return [await self._settle_alone(settlement) for settlement in settlements]
        return [None if result is None else _share(settlement, result) for settlement in settlements]

    async def _settle_alone(self, settlement: Settlement) -> SettleResult | None:
        try:
            return await self._settle_with_retries(settlement)
        except QueueNotFound as exc:
            if exc.queue == self._queue or not settlement.dead_letters:
                self._give_up(settlement, exc)
                return None
            return await self._settle_without(exc.queue, settlement)
        except Exception as exc:
            if not settlement.dead_letters or not (settlement.acks or settlement.retries):
                self._give_up(settlement, exc)
                return None
        # the dead letters apart: the acks and retries stand whatever becomes of them
        kept = await self._settle_alone(Settlement(settlement.acks, settlement.retries))
        dead = await self._settle_alone(Settlement(dead_letters=settlement.dead_letters))
        return _joined(kept, dead)

    async def _settle_without(self, dead_letter_queue: str, settlement: Settlement) -> SettleResult | None:
        """Settle `settlement`, whose dead-letter queue `dead_letter_queue` is missing: created
        again if the App creates queues on first use, else its dead letters are retried later."""
        if self._core.auto_create:
            try:
                await self._core.ensure_queue(dead_letter_queue)
                log.warning("dead-letter queue %s was missing: created it again", dead_letter_queue)
                return await self._settle_with_retries(settlement)
            except Exception as exc:  # deleted again meanwhile, or cannot be created: as below
                log.debug("creating dead-letter queue %s again failed: %s", dead_letter_queue, _cause(exc))
        due = [d for d in settlement.dead_letters if d.dead_letter_queue == dead_letter_queue]
        self._report_missing(dead_letter_queue, len(due))
        retried = [Retry(d.lease_id, DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS) for d in due]
        others = [d for d in settlement.dead_letters if d.dead_letter_queue != dead_letter_queue]
        result = await self._settle_alone(
            Settlement(settlement.acks, [*settlement.retries, *retried], others)
        )
        if result is None:
            return None
        stale = set(result.stale)
        held = [retry.lease_id for retry in retried if retry.lease_id not in stale]
        return dataclasses.replace(result, held=[*result.held, *held])

    def _report_missing(self, dead_letter_queue: str, count: int) -> None:
        """One ERROR line per interval for a missing dead-letter queue, however many messages."""
        now = time.monotonic()
        last = self._missing_reported.get(dead_letter_queue)
        if last is not None and now - last < DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS:
            return
        self._missing_reported[dead_letter_queue] = now
        log.error(
            "dead-letter queue %s of %s does not exist: %d messages due for it stay in %s and are "
            "retried every %.0fs until it is created (this line repeats at most every %.0fs)",
            dead_letter_queue,
            self._queue,
            count,
            self._queue,
            DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS,
            DEAD_LETTER_QUEUE_MISSING_RETRY_SECONDS,
        )

    def _give_up(self, settlement: Settlement, exc: Exception) -> None:
        log.error(
            "settling %d outcomes on %s failed (%s): their leases expire and the messages come back",
            _size(settlement),
            self._queue,
            _cause(exc),
        )

    async def _settle_with_retries(self, settlement: Settlement) -> SettleResult | None:
        """The result, or None when the engine stayed unreachable for every try; any other
        error is raised at once (trying again would fail the same way)."""
        delay = SETTLE_RETRY_FIRST_SECONDS
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                return await self._core.settle(self._queue, settlement)
            except BackendUnavailable as exc:
                then = (
                    f"retrying in {delay:.1f}s"
                    if attempt < SETTLE_ATTEMPTS
                    else "giving up: the leases expire"
                )
                log.warning(
                    "settling %d outcomes on %s failed (try %d of %d: %s); %s",
                    _size(settlement),
                    self._queue,
                    attempt,
                    SETTLE_ATTEMPTS,
                    _cause(exc),
                    then,
                )
                if attempt < SETTLE_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SETTLE_RETRY_MAX_SECONDS)
        return None


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _joined(first: SettleResult | None, second: SettleResult | None) -> SettleResult | None:
    """Two parts' results as one; None only when neither part was written."""
    if first is None or second is None:
        return first or second
    return SettleResult(
        first.acked + second.acked,
        first.retried + second.retried,
        first.dead_lettered + second.dead_lettered,
        [*first.stale, *second.stale],
        [*first.held, *second.held],
    )


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
    if result.held:  # never a merged result: a batch with held dead letters settled alone
        return result
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
