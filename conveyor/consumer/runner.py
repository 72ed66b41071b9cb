"""One consumer's loop: lease batches, run the handler, renew leases, settle outcomes in one call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable

from conveyor import limits as L
from conveyor.consumer import backoff
from conveyor.consumer.concurrency import ConcurrencyLimit
from conveyor.consumer.env import Env
from conveyor.consumer.message import Message, MessageBatch, Outcome, error_text
from conveyor.consumer.observer import NO_OBSERVER, ConsumerObserver
from conveyor.consumer.settle_group import SettleGroup
from conveyor.consumer.spec import ConsumerSpec
from conveyor.core import Core
from conveyor.core.ids import new_message_id
from conveyor.errors import BackendUnavailable, HandlerTimedOut
from conveyor.types import DeadLetter, LeasedMessage, QueueStats, Retry, Settlement

log = logging.getLogger("conveyor.consumer")

# How often the queue's stats are refreshed (in the background) while handlers read `batch.stats`.
STATS_INTERVAL_SECONDS = 5.0
# While a queue has a backlog, one lease takes whole batches ahead: at least this many messages
# (small batches then cost one lease per 400 messages, not one per batch) and at least
# this many batches (large ones then start from `_ready` as slots free up, without waiting for a
# lease round trip). The batches beyond the first wait (their leases renewed) for a free slot; a
# stopping worker gives them back at once. Measured in bench/README.md.
LEASE_AHEAD_MESSAGES = 400
LEASE_AHEAD_BATCHES = 5
# Finished batches that may wait for their settle at once while the next batches run (those
# that finish together settle in one engine call: see SettleGroup): room for the engine's
# `settling_outcomes` (500; SQLite 1,000), and at least SETTLING_BATCHES batches, so that small
# finished batches do not keep their slots while a settle is under way.
SETTLING_BATCHES = 16
# After a failed lease the worker waits this long, doubling on each further failure up to the max.
LEASE_RETRY_FIRST_SECONDS = 0.1
LEASE_RETRY_MAX_SECONDS = 5.0


def lease_ahead_size(batch_size: int) -> int:
    """How many messages one lease takes on a backlogged queue: whole batches of `batch_size`."""
    return max(LEASE_AHEAD_BATCHES, LEASE_AHEAD_MESSAGES // batch_size) * batch_size


def settling_batches(batch_size: int, settling_outcomes: int) -> int:
    """How many finished batches of `batch_size` may wait for their settle at once."""
    return max(SETTLING_BATCHES, settling_outcomes // batch_size)


class ConsumerRunner:
    """One consumer: leases batches from its queue, runs its handler on each, settles the outcomes."""

    def __init__(
        self, core: Core, spec: ConsumerSpec, env: Env, observer: ConsumerObserver = NO_OBSERVER
    ) -> None:
        self.core = core
        self.spec = spec
        self.env = env
        self.observer = observer  # worker metrics
        self.backend = core.backend
        self.slots = ConcurrencyLimit(spec.max_concurrency)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.processed = 0
        self._stats: QueueStats | None = None
        self._stats_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        # full batches leased ahead, waiting for a slot; and whether the last lease came back full
        self._ready: deque[list[LeasedMessage]] = deque()
        # the lease ids of the batches whose handlers run, by batch
        self._running: dict[int, list[str]] = {}
        self._backlogged = False
        self._stopping: asyncio.Event | None = None
        settling = settling_batches(spec.max_batch_size, self.backend.settling_outcomes)
        self._settling = asyncio.Semaphore(settling)
        self._settle_group = SettleGroup(core, spec.queue)
        self._random = random.Random()  # the jitter of exponential retry backoff

    # -- the fetch loop ----------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event, shutdown_grace: float) -> None:
        await self.core.ensure_queue(self.spec.queue)
        if self.spec.dead_letter_queue is not None:
            await self.core.ensure_queue(self.spec.dead_letter_queue)
        self._stopping = stopping
        renewer = asyncio.create_task(self._renew_leases())
        backoff = 0.0
        try:
            while not stopping.is_set():
                if not self.slots.try_acquire() and not await self._until(self.slots.acquire(), stopping):
                    break
                if stopping.is_set():  # the slot came free as the worker began to stop
                    await self.slots.release()
                    break
                if self._ready:
                    self._start(self._ready.popleft())
                    continue
                try:
                    leased = await self._collect(stopping)
                except Exception as exc:
                    await self.slots.release()
                    backoff = self._lease_failed(exc, backoff)
                    await self._until(asyncio.sleep(backoff), stopping)
                    continue
                backoff = 0.0
                if not leased:
                    await self.slots.release()
                    continue
                if stopping.is_set():
                    await self.slots.release()
                    await self._release([m.lease_id for m in leased])
                    break
                self._start(leased)
        finally:
            if self._ready:
                await self._release([m.lease_id for batch in self._ready for m in batch])
                self._ready.clear()
            await self._finish_in_flight(shutdown_grace)  # renewing their leases meanwhile
            renewer.cancel()
            for task in self._background:
                task.cancel()

    def _lease_failed(self, exc: Exception, backoff: float) -> float:
        """Log a failed lease and return how long to wait before the next: an unreachable engine
        gets one line per try and a growing pause; anything else its full traceback."""
        backoff = min(max(backoff * 2, LEASE_RETRY_FIRST_SECONDS), LEASE_RETRY_MAX_SECONDS)
        if isinstance(exc, BackendUnavailable):
            log.warning("leasing from %s failed (%s); retrying in %.1fs", self.spec.queue, exc, backoff)
        else:
            log.exception("leasing from %s failed; retrying in %.1fs", self.spec.queue, backoff)
        return backoff

    def _start(self, leased: list[LeasedMessage]) -> None:
        """Run one batch in a task of its own; it holds a slot, which it gives back when done."""
        task = asyncio.create_task(self._process(leased))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    def _start_ready(self) -> None:
        """Start batches leased ahead while slots are free (not once the worker is stopping)."""
        while self._ready and not (self._stopping and self._stopping.is_set()) and self.slots.try_acquire():
            self._start(self._ready.popleft())

    async def _renew_leases(self) -> None:
        """The heartbeat: every third of the visibility timeout, renew the leases of every batch
        this consumer holds (running, or leased ahead and waiting for a slot) in one call."""
        while True:
            await asyncio.sleep(self.spec.visibility_timeout / 3)
            lease_ids = [m.lease_id for batch in self._ready for m in batch]
            lease_ids.extend(lease_id for batch in self._running.values() for lease_id in batch)
            if not lease_ids:
                continue
            try:
                live = await self.core.extend_leases(self.spec.queue, lease_ids, self.spec.visibility_timeout)
                self.observer.renewed(self.spec.queue, live)
            except Exception:
                log.exception("renewing leases on %s failed", self.spec.queue)

    async def _until(self, awaitable: Awaitable[object], stopping: asyncio.Event) -> bool:
        """Await `awaitable` unless `stopping` is set first; True if it completed."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if task.cancelled():
            return False
        task.result()  # re-raise its error; one that finished just as it was cancelled still counts
        return True

    async def _collect(self, stopping: asyncio.Event) -> list[LeasedMessage]:
        """Lease until the batch is full or `max_batch_timeout` passed since its first message.

        On a backlogged queue the first lease also takes whole batches ahead (see
        LEASE_AHEAD_MESSAGES and LEASE_AHEAD_BATCHES): they go to `_ready` and start as soon as
        slots are free."""
        spec = self.spec
        size = spec.max_batch_size
        leased: list[LeasedMessage] = []
        deadline: float | None = None
        renewed_at = time.monotonic()
        renew_every = spec.visibility_timeout / 3
        woken: list[LeasedMessage] | None = None  # what the last wait leased as it woke
        while len(leased) < size and not stopping.is_set():
            wanted = size - len(leased)
            first = deadline is None
            if woken is not None:
                got, woken = woken, None
            else:
                if first and self._backlogged:
                    wanted = lease_ahead_size(size)
                got = await self.backend.lease_many(spec.queue, wanted, spec.visibility_timeout)
            if first:
                self._backlogged = len(got) == wanted
            if got:
                leased.extend(got)
                if len(leased) > size:
                    await self._keep_ahead(leased[size:])
                    del leased[size:]
                if first:
                    # the batch timeout runs on the app's clock, so a FakeClock drives it in tests
                    deadline = self.core.clock.now() + spec.max_batch_timeout
                    await self.slots.observe(
                        fresh=sum(1 for m in got if m.attempts == 1),
                        batch_size=wanted,
                        drained=len(got) < wanted,
                    )
            elif first:
                await self.slots.observe(fresh=0, batch_size=wanted, drained=True)
            if len(leased) >= size or (got and len(got) == wanted):
                continue
            if leased and spec.max_batch_timeout == 0:
                break
            now = self.core.clock.now()
            if deadline is not None and now >= deadline:
                break
            wait = L.IDLE_POLL_SECONDS if deadline is None else deadline - now
            if leased:
                wait = min(wait, renew_every)
                if time.monotonic() - renewed_at >= renew_every:
                    live = await self.core.extend_leases(
                        spec.queue, [m.lease_id for m in leased], spec.visibility_timeout
                    )
                    self.observer.renewed(spec.queue, live)
                    renewed_at = time.monotonic()
            woken = await self._wait_and_lease(size - len(leased), wait, stopping)
        if woken:
            leased.extend(woken)  # leased as the worker began to stop: given back below
        if stopping.is_set() and leased:
            await self._release([m.lease_id for m in leased])
            return []
        return leased

    async def _wait_and_lease(
        self, wanted: int, wait: float, stopping: asyncio.Event
    ) -> list[LeasedMessage] | None:
        """Wait up to `wait` seconds for messages and lease up to `wanted` as soon as woken
        (one engine call); None if the worker began to stop first."""
        spec = self.spec
        waiting = asyncio.ensure_future(
            self.backend.wait_and_lease(spec.queue, wanted, spec.visibility_timeout, wait)
        )
        if not await self._until(waiting, stopping):
            return None
        return waiting.result()

    async def _keep_ahead(self, rest: list[LeasedMessage]) -> None:
        """Queue the whole batches of a lease-ahead to start when slots free up, in order; a
        partial rest goes back to the queue at once, so no batch skips `max_batch_timeout`."""
        size = self.spec.max_batch_size
        whole = len(rest) - len(rest) % size
        self._ready.extend(rest[i : i + size] for i in range(0, whole, size))
        if whole < len(rest):
            await self._release([m.lease_id for m in rest[whole:]])
        self._start_ready()

    async def _release(self, lease_ids: list[str]) -> None:
        try:
            await self.core.release(self.spec.queue, lease_ids)
        except Exception:
            log.exception(
                "releasing %d leases on %s failed; they return when they expire",
                len(lease_ids),
                self.spec.queue,
            )

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, leased: list[LeasedMessage]) -> None:
        messages = [Message(m, self.core.limits) for m in leased]
        batch = MessageBatch(self.spec.queue, messages, stats_source=self._current_stats)
        key = id(batch)
        self._running[key] = [m.lease_id for m in leased]  # renewed by _renew_leases from now on
        error: BaseException | None = None
        self.observer.batch_started(self.spec.queue, len(messages))
        started = time.perf_counter()
        try:
            await self._run_handler(batch)
        except asyncio.CancelledError:
            # the shutdown grace ran out: give the messages back at once
            del self._running[key]
            await self._release([m.lease_id for m in messages])
            await self.slots.release()
            raise
        except HandlerTimedOut as exc:
            error = exc
            log.warning(
                "handler %s on a batch of %d from %s %s; its unmarked messages are retried",
                self.spec.name,
                len(messages),
                self.spec.queue,
                exc,
                extra={"queue": self.spec.queue, "outcome": "handler_timed_out"},
            )
        except Exception as exc:
            error = exc
            log.exception(
                "handler %s failed on a batch of %d from %s",
                self.spec.name,
                len(messages),
                self.spec.queue,
                extra={"queue": self.spec.queue, "outcome": "handler_failed"},
            )
        finally:
            self._running.pop(key, None)
        self.observer.batch_handled(self.spec.queue, time.perf_counter() - started, error is not None)
        # The handler is done: its slot goes to the next batch while this one settles (up to
        # settling_batches() settles at once; past that a batch keeps its slot until one is done).
        async with self._settling:
            await self.slots.release()
            self._start_ready()
            await self._settle(messages, error)

    async def _run_handler(self, batch: MessageBatch) -> None:
        """Run the handler; past the consumer's `timeout` (on the App's clock, so a FakeClock
        drives it in tests) cancel it and raise HandlerTimedOut, so its unmarked messages are
        retried. A handler that ignores the cancel is left running, unsupervised, after
        HANDLER_CANCEL_GRACE_SECONDS: its slot and messages are taken back anyway."""
        timeout = self.spec.timeout
        if timeout is None:
            await self.spec.handler(batch, self.env)
            return
        handler = asyncio.ensure_future(self.spec.handler(batch, self.env))
        timer = asyncio.ensure_future(self.core.clock.sleep(timeout))
        try:
            await asyncio.wait([handler, timer], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # shutdown: the handler goes too
            handler.cancel()
            raise
        finally:
            timer.cancel()
        if handler.done():
            handler.result()  # its return, or its error
            return
        handler.cancel()
        done, _ = await asyncio.wait([handler], timeout=L.HANDLER_CANCEL_GRACE_SECONDS)
        if not done:
            log.error(
                "handler %s on %s ignored its cancellation at its %g s time limit; left running",
                self.spec.name,
                self.spec.queue,
                timeout,
            )
        elif not handler.cancelled() and handler.exception() is not None:
            log.debug("handler %s raised as it was cancelled", self.spec.name, exc_info=handler.exception())
        raise HandlerTimedOut(timeout)

    def _retry_delay(self, message: Message) -> float:
        """An explicit `retry(delay_seconds=)` wins; else the consumer's fixed `retry_delay` or its
        exponential backoff with full jitter (by the delivery's attempt number)."""
        if message.retry_delay is not None:
            return message.retry_delay
        spec = self.spec
        if spec.retry_backoff == "fixed":
            return spec.retry_delay
        ceiling = backoff.exponential_ceiling(
            message.attempts, spec.retry_backoff_base, spec.retry_backoff_cap
        )
        return backoff.full_jitter(ceiling, self._random)

    def _settlement(self, messages: list[Message], error: BaseException | None) -> Settlement:
        spec = self.spec
        settlement = Settlement()
        for message in messages:
            outcome = message.outcome
            if outcome is None:
                outcome = Outcome.ACK if error is None else Outcome.RETRY
            if outcome is Outcome.ACK:
                settlement.acks.append(message.lease_id)
            elif outcome is Outcome.DEAD_LETTER or message.attempts > spec.max_retries:
                reason = message.reason or error_text(error, "retried by the handler")
                settlement.dead_letters.append(
                    DeadLetter(
                        message.lease_id, new_message_id(), reason, spec.dead_letter_queue, message.attempts
                    )
                )
            else:
                settlement.retries.append(Retry(message.lease_id, self._retry_delay(message)))
        return settlement

    async def _settle(self, messages: list[Message], error: BaseException | None) -> None:
        settlement = self._settlement(messages, error)
        result = await self._settle_group.settle(settlement)
        if result is None:
            return  # the engine failed every try: the leases expire and the messages come back
        self.processed += len(messages)
        self.observer.settled(self.spec.queue, result)
        self._log_outcome(messages, settlement, result.stale)

    def _log_outcome(self, messages: list[Message], settlement: Settlement, stale: list[str]) -> None:
        spec = self.spec
        level = logging.INFO if settlement.retries or settlement.dead_letters or stale else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "batch queue=%s size=%d acked=%d retried=%d dead_lettered=%d stale=%d ids=%s attempts=%s",
                spec.queue,
                len(messages),
                len(settlement.acks),
                len(settlement.retries),
                len(settlement.dead_letters),
                len(stale),
                ",".join(m.id for m in messages),
                ",".join(str(m.attempts) for m in messages),
            )
        if not settlement.dead_letters:
            return  # the common case: no per-message work on the hot path
        by_lease = {m.lease_id: m for m in messages}
        for dead in settlement.dead_letters:
            message = by_lease[dead.lease_id]
            if dead.lease_id in stale:
                continue
            log.warning(
                "dead_letter queue=%s id=%s attempts=%d to=%s error=%s",
                spec.queue,
                message.id,
                message.attempts,
                spec.dead_letter_queue or "(dropped: no dead-letter queue)",
                dead.error,
                extra={
                    "queue": spec.queue,
                    "message_id": message.id,
                    "attempt": message.attempts,
                    "outcome": "dead_letter",
                },
            )

    def _current_stats(self) -> QueueStats | None:
        """The last stats snapshot, for a handler reading `batch.stats`; a stale one is refreshed in
        the background, off the hot path. Nothing is counted while no handler asks."""
        now = time.monotonic()
        if now - self._stats_at >= STATS_INTERVAL_SECONDS:
            self._stats_at = now
            task = asyncio.create_task(self._refresh_stats())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return self._stats

    async def _refresh_stats(self) -> None:
        try:
            self._stats = await self.backend.stats(self.spec.queue)
        except Exception:
            log.debug("stats for %s unavailable", self.spec.queue, exc_info=True)

    # -- shutdown ----------------------------------------------------------------------------

    async def _finish_in_flight(self, grace: float) -> None:
        if not self.in_flight:
            return
        pending = set(self.in_flight)
        _, still_running = await asyncio.wait(pending, timeout=grace)
        for task in still_running:
            task.cancel()
        if still_running:
            log.warning(
                "%d batches on %s outran the shutdown grace; released", len(still_running), self.spec.queue
            )
            await asyncio.gather(*still_running, return_exceptions=True)
