"""One consumer's loop: lease batches, run the handler, renew leases, settle outcomes in one call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

from conveyor import limits as L
from conveyor import tracing
from conveyor.backends.base import handed_lease_id, is_ahead
from conveyor.consumer import backoff
from conveyor.consumer.begin_group import BeginGroup
from conveyor.consumer.concurrency import ConcurrencyLimit
from conveyor.consumer.env import Env
from conveyor.consumer.message import Message, MessageBatch, Outcome, error_text
from conveyor.consumer.observer import NO_OBSERVER, ConsumerObserver
from conveyor.consumer.rate import rate_bucket
from conveyor.consumer.settle_group import SettleGroup
from conveyor.consumer.spec import ConsumerSpec
from conveyor.consumer.suspects import is_suspect, past_bound, unfinished_reason
from conveyor.core import Core
from conveyor.core.ids import new_message_id
from conveyor.errors import BackendUnavailable, HandlerTimedOut, StorageUnusable
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
        # begins under way or done for the batches at the front of `_ready`, by batch: at most
        # one per slot (max_concurrency; the autoscale bound when autoscaled), so a batch whose
        # slot frees up starts without waiting for its begin, and the begins of many batches
        # share one engine call (a SIGKILL burns the attempts of these few only; docs/semantics.md)
        self._begun: dict[int, asyncio.Task[list[LeasedMessage]]] = {}
        # suspects (their last delivery ended without an outcome), leased ahead: each runs alone
        # (docs/semantics.md): it starts once no other handler of this consumer runs, and none
        # starts, nor is anything more leased, until no suspect waits or runs
        self._suspects: deque[LeasedMessage] = deque()
        self._suspect_running = False
        self._no_suspects = asyncio.Event()
        self._no_suspects.set()
        # batches started whose handlers have not finished
        self._handlers = 0
        # one future per finished batch whose outcomes are not settled yet: a suspect waits for
        # those of its time, so that a crash it causes does not undo them
        self._unsettled: set[asyncio.Future[None]] = set()
        # the lease ids of the batches whose handlers run, by batch
        self._running: dict[int, list[str]] = {}
        self._backlogged = False
        self._stopping: asyncio.Event | None = None
        settling = settling_batches(spec.max_batch_size, self.backend.settling_outcomes)
        self._settling = asyncio.Semaphore(settling)
        self._settle_group = SettleGroup(core, spec.queue)
        self._begin_group = BeginGroup(core, spec.queue)
        self._bucket = rate_bucket(core.backend, spec)
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
                if self._startable():
                    self._start_next()
                    continue
                if not self._no_suspects.is_set():
                    # suspects go alone: nothing more is leased or started until they are done
                    await self.slots.release()
                    await self._until(self._no_suspects.wait(), stopping)
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
                if not self._no_suspects.is_set():  # suspects came while it was collected
                    self._ready.append(leased)
                    await self.slots.release()
                    self._start_ready()
                    continue
                self._start(leased)
        finally:
            await self._settle_begins_ahead()  # their leases are handed, or given up, first
            if self._ready or self._suspects:
                waiting = [m.lease_id for batch in self._ready for m in batch]
                waiting.extend(m.lease_id for m in self._suspects)
                await self._release(waiting)
                self._ready.clear()
                self._suspects.clear()
                self._suspects_changed()
            await self._finish_in_flight(shutdown_grace)  # renewing their leases meanwhile
            renewer.cancel()
            for task in self._background:
                task.cancel()

    def _lease_failed(self, exc: Exception, backoff: float) -> float:
        """Log a failed lease and return how long to wait before the next: an unreachable engine
        or unusable storage gets one line per try and a growing pause; anything else its full
        traceback."""
        backoff = min(max(backoff * 2, LEASE_RETRY_FIRST_SECONDS), LEASE_RETRY_MAX_SECONDS)
        if isinstance(exc, BackendUnavailable):
            log.warning("leasing from %s failed (%s); retrying in %.1fs", self.spec.queue, exc, backoff)
        elif isinstance(exc, StorageUnusable):  # the operator's to fix, and its message says how
            log.error("leasing from %s failed (%s); retrying in %.1fs", self.spec.queue, exc, backoff)
        else:
            log.exception("leasing from %s failed; retrying in %.1fs", self.spec.queue, backoff)
        return backoff

    def _start(self, leased: list[LeasedMessage], suspect: bool = False) -> None:
        """Run one batch in a task of its own; it holds a slot, which it gives back when done."""
        if suspect:
            self._suspect_running = True
        self._handlers += 1
        task = asyncio.create_task(self._process(leased, suspect))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    def _startable(self) -> bool:
        """Whether a batch leased ahead may start now: while suspects wait or run, only the next
        suspect, once no handler runs; otherwise a ready batch."""
        if self._no_suspects.is_set():
            return bool(self._ready)
        return bool(self._suspects) and not self._suspect_running and self._handlers == 0

    def _start_next(self) -> None:
        """Start the next batch leased ahead (a slot is held for it): a suspect alone, first."""
        if self._suspects:
            self._start([self._suspects.popleft()], suspect=True)
        else:
            self._start(self._ready.popleft())
            self._begin_ahead()

    def _begin_ahead(self) -> None:
        """Begin the batches at the front of `_ready`, at most one per slot (`slots.bound`), before
        their slots free up: a steady-state batch then starts with its begin already durable, and the begins
        of many batches share one engine call. Not while suspects wait (they go alone) nor once
        the worker is stopping (those batches are given back unbegun)."""
        stopping = self._stopping
        if not self._no_suspects.is_set() or (stopping and stopping.is_set()):
            return
        room = self.slots.bound - len(self._begun)
        for batch in self._ready:
            if room <= 0:
                break
            if id(batch) not in self._begun:
                self._begun[id(batch)] = asyncio.create_task(self._begin_now(batch))
                room -= 1

    async def _settle_begins_ahead(self) -> None:
        """Wait for the begins under way for batches that will not start (a stopping worker):
        their leases are then handed (given back by their handed ids) or were never begun."""
        begun = list(self._begun.values())
        self._begun.clear()
        if begun:
            await asyncio.gather(*begun, return_exceptions=True)

    def _suspects_changed(self) -> None:
        if self._suspects or self._suspect_running:
            self._no_suspects.clear()
        else:
            self._no_suspects.set()

    def _start_ready(self) -> None:
        """Start batches leased ahead while slots are free (not once the worker is stopping)."""
        stopping = self._stopping
        while self._startable() and not (stopping and stopping.is_set()) and self.slots.try_acquire():
            self._start_next()
        self._begin_ahead()

    async def _renew_leases(self) -> None:
        """The heartbeat: every third of the visibility timeout, renew the leases of every batch
        this consumer holds (running, or leased ahead and waiting for a slot) in one call."""
        while True:
            await asyncio.sleep(self.spec.visibility_timeout / 3)
            lease_ids = [m.lease_id for batch in self._ready for m in batch]
            lease_ids.extend(m.lease_id for m in self._suspects)
            lease_ids.extend(lease_id for batch in self._running.values() for lease_id in batch)
            if not lease_ids:
                continue
            try:
                live = await self.core.extend_leases(self.spec.queue, lease_ids, self.spec.visibility_timeout)
                self.observer.renewed(self.spec.queue, live)
            except Exception as exc:  # one line per try: an outage would repeat a traceback
                log.warning(
                    "renewing %d leases on %s failed (%s: %s); trying again in %.1fs",
                    len(lease_ids),
                    self.spec.queue,
                    type(exc).__name__,
                    exc,
                    self.spec.visibility_timeout / 3,
                )

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
                got_all, woken = woken, None
            else:
                if first and self._backlogged:
                    wanted = lease_ahead_size(size)
                if self._bucket is not None:
                    granted = await self._allowed(wanted, stopping, deadline)
                    if not granted:  # the worker is stopping, or the batch's time ran out
                        break
                    wanted = granted
                # leased ahead ("r"): an attempt counts once a handler starts (see _begin)
                hand = self._handing(wanted) if first and self._backlogged else 0
                if hand:
                    # this batch and the ones begun ahead at once are leased handed
                    got_all = await self.backend.lease_ahead(
                        spec.queue, wanted, spec.visibility_timeout, hand_first=hand
                    )
                else:
                    got_all = await self.backend.lease_many(
                        spec.queue, wanted, spec.visibility_timeout, handed=False
                    )
                await self._unused(wanted - len(got_all))
            got = self._triage(got_all)
            if first:
                self._backlogged = len(got_all) == wanted
                await self.slots.observe(
                    fresh=sum(1 for m in got_all if m.attempts == 1),
                    batch_size=wanted,
                    drained=len(got_all) < wanted,
                )
            if got:
                leased.extend(got)
                if len(leased) > size:
                    await self._keep_ahead(leased[size:])
                    del leased[size:]
                if deadline is None:
                    # the batch timeout runs on the app's clock, so a FakeClock drives it in tests
                    deadline = self.core.clock.now() + spec.max_batch_timeout
            if not leased and not self._no_suspects.is_set():
                break  # suspects came: they go alone, and get this slot
            if leased and not is_ahead(leased[0].lease_id):
                break  # handed at the lease: it starts now, full or not
            if len(leased) >= size or (got_all and len(got_all) == wanted):
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
            wanted = size - len(leased)
            if self._bucket is not None:
                granted = await self._allowed(wanted, stopping, deadline)
                if not granted:
                    break
                wanted = granted
            woken = await self._wait_and_lease(wanted, wait, stopping)
            await self._unused(wanted - len(woken or ()))
        if woken:
            leased.extend(woken)  # leased as the worker began to stop: given back below
        if stopping.is_set() and leased:
            await self._release([m.lease_id for m in leased])
            return []
        return leased

    async def _allowed(self, wanted: int, stopping: asyncio.Event, deadline: float | None) -> int:
        """How many of `wanted` messages the rate limit lets this consumer lease now, waiting for
        the first token if none is due; 0 when the worker began to stop or the batch's deadline
        (on the app's clock) passed first."""
        assert self._bucket is not None
        while not stopping.is_set():
            try:
                granted, due = await self._bucket.take(wanted)
            except Exception:
                log.exception("the rate limit of %s could not be read; waiting", self.spec.queue)
                granted, due = 0, L.IDLE_POLL_SECONDS
            if granted:
                return granted
            if deadline is not None:
                left = deadline - self.core.clock.now()
                if left <= 0:
                    return 0
                due = min(due, left)
            await self._until(asyncio.sleep(due), stopping)
        return 0

    async def _unused(self, count: int) -> None:
        """Give the rate limit back the tokens of messages a lease did not find."""
        if self._bucket is not None and count > 0:
            try:
                await self._bucket.give_back(count)
            except Exception:
                log.exception("giving tokens back to the rate limit of %s failed", self.spec.queue)

    async def _wait_and_lease(
        self, wanted: int, wait: float, stopping: asyncio.Event
    ) -> list[LeasedMessage] | None:
        """Wait up to `wait` seconds for messages and lease up to `wanted` as soon as woken
        (one engine call); None if the worker began to stop first."""
        spec = self.spec
        waiting = asyncio.ensure_future(
            self.backend.wait_and_lease(spec.queue, wanted, spec.visibility_timeout, wait, handed=False)
        )
        if not await self._until(waiting, stopping):
            return None
        return waiting.result()

    def _handing(self, wanted: int) -> int:
        """How many messages of a lease-ahead of `wanted` may be leased handed: the batch being
        collected (it starts as soon as the lease is back, when the lease fills it) and the
        batches `_begin_ahead` would begin the moment they reach `_ready`, so that a SIGKILL
        counts exactly what it counts when they are begun (docs/semantics.md). None while
        suspects wait (nothing is begun ahead then)."""
        if not self._no_suspects.is_set():
            return 0
        size = self.spec.max_batch_size
        unbegun = sum(1 for batch in self._ready if id(batch) not in self._begun)
        batches = 1 + max(0, self.slots.bound - len(self._begun) - unbegun)
        return min(wanted // size, batches) * size

    def _triage(self, leased: list[LeasedMessage]) -> list[LeasedMessage]:
        """Take out of a lease the messages past the bound (dead-lettered at once, no handler
        sees them) and the suspects (queued to run alone); the rest batch as usual."""
        if not any(m.lost or past_bound(m, self.spec.max_retries) for m in leased):
            return leased  # the common case: one pass, no allocation
        rest: list[LeasedMessage] = []
        doomed: list[LeasedMessage] = []
        for message in leased:
            if past_bound(message, self.spec.max_retries):
                doomed.append(message)
            elif is_suspect(message):
                self._suspects.append(message)
                self._no_suspects.clear()
            else:
                rest.append(message)
        if doomed:
            task = asyncio.create_task(self._dead_letter_unfinished(doomed))
            self.in_flight.add(task)  # a stopping worker waits for it like for a batch
            task.add_done_callback(self.in_flight.discard)
        self._start_ready()
        return rest

    async def _dead_letter_unfinished(self, doomed: list[LeasedMessage]) -> None:
        """Dead-letter messages delivered max_retries + 1 times already (the last deliveries
        without an outcome): at lease time, so a message that kills its worker ends."""
        spec = self.spec
        settlement = Settlement()
        for message in doomed:
            settlement.dead_letters.append(
                DeadLetter(
                    message.lease_id,
                    new_message_id(),
                    unfinished_reason(message),
                    spec.dead_letter_queue,
                    message.attempts - 1,  # the deliveries so far; this lease is not one
                )
            )
        result = await self._settle_group.settle(settlement)
        if result is None:
            return  # the engine failed every try: the leases expire and the bound applies again
        self.observer.settled(spec.queue, result)
        for dead, message in zip(settlement.dead_letters, doomed, strict=True):
            if dead.lease_id in result.stale:
                continue
            log.warning(
                "dead_letter queue=%s id=%s attempts=%d to=%s error=%s",
                spec.queue,
                message.id,
                message.attempts - 1,
                spec.dead_letter_queue or "(dropped: no dead-letter queue)",
                dead.error,
                extra={
                    "queue": spec.queue,
                    "message_id": message.id,
                    "attempt": message.attempts - 1,
                    "outcome": "dead_letter",
                },
            )

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

    async def _process(self, leased: list[LeasedMessage], suspect: bool = False) -> None:
        key = id(leased)
        self._running[key] = [m.lease_id for m in leased]  # renewed by _renew_leases from now on
        try:
            if suspect:
                await self._settled_before()
            begun = self._begun.pop(key, None)
            self._begin_ahead()  # its place among the batches begun ahead is free
            leased = await self._begin(leased, begun)
        except asyncio.CancelledError:
            self._suspect_done(suspect)
            del self._running[key]
            await self._release([m.lease_id for m in leased])
            await self.slots.release()
            raise
        if not leased:
            self._suspect_done(suspect)
            del self._running[key]
            await self.slots.release()
            self._start_ready()
            return
        self._running[key] = [m.lease_id for m in leased]
        messages = [Message(m, self.core.limits) for m in leased]
        batch = MessageBatch(self.spec.queue, messages, stats_source=self._current_stats)
        error: BaseException | None = None
        spans = tracing.process_spans(self.spec.queue, leased) if tracing.AVAILABLE else None
        self.observer.batch_started(self.spec.queue, len(messages))
        started = time.perf_counter()
        try:
            with tracing.handling(spans):
                await self._run_handler(batch)
        except asyncio.CancelledError:
            # the shutdown grace ran out: give the messages back at once
            tracing.abandon(spans)
            self._suspect_done(suspect)
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
        self._suspect_done(suspect)
        # The handler is done: its slot goes to the next batch while this one settles (up to
        # settling_batches() settles at once; past that a batch keeps its slot until one is done).
        unsettled = asyncio.get_running_loop().create_future()
        self._unsettled.add(unsettled)
        try:
            async with self._settling:
                await self.slots.release()
                self._start_ready()
                await self._settle(messages, error, spans)
        finally:
            self._unsettled.discard(unsettled)
            unsettled.set_result(None)

    def _suspect_done(self, suspect: bool) -> None:
        """A handler finished (or never started): the next suspect may go once none runs."""
        self._handlers -= 1
        if suspect:
            self._suspect_running = False
            self._suspects_changed()

    async def _settled_before(self) -> None:
        """Wait until the outcomes of every batch finished so far are settled (or given up)."""
        pending = list(self._unsettled)
        if pending:
            await asyncio.wait(pending)

    async def _begin(
        self, leased: list[LeasedMessage], begun: asyncio.Task[list[LeasedMessage]] | None
    ) -> list[LeasedMessage]:
        """Mark the batch's read-ahead leases as handed to the handler, durably, before it
        starts (or wait for the begin `_begin_ahead` started): from here a crash or an expired
        lease counts as a delivery without an outcome. Messages whose lease was lost meanwhile
        are left out (someone else may hold them); a failed begin gives the batch back."""
        try:
            return await (begun if begun is not None else self._begin_now(leased))
        except Exception as exc:
            log.warning(
                "starting a batch of %d from %s failed (%s); its messages are given back",
                len(leased),
                self.spec.queue,
                exc,
            )
            await self._release([m.lease_id for m in leased])
            return []

    async def _begin_now(self, leased: list[LeasedMessage]) -> list[LeasedMessage]:
        """Begin the batch's read-ahead leases in the next group; the messages still live, their
        lease ids now handed. Raises what the engine raised."""
        ahead = [m for m in leased if is_ahead(m.lease_id)]
        if not ahead:
            return leased
        live = await self._begin_group.begin([m.lease_id for m in ahead])
        lost = {id(m) for m, ok in zip(ahead, live, strict=True) if not ok}
        for message in ahead:
            message.lease_id = handed_lease_id(message.lease_id)
        if lost:
            log.info("%d leases on %s expired before a handler started", len(lost), self.spec.queue)
            return [m for m in leased if id(m) not in lost]
        return leased

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

    async def _settle(
        self, messages: list[Message], error: BaseException | None, spans: list[Any] | None = None
    ) -> None:
        settlement = self._settlement(messages, error)
        tracing.finish(spans, messages, settlement, error)
        result = await self._settle_group.settle(settlement)
        if result is None:
            return  # the engine failed every try: the leases expire and the messages come back
        self.processed += len(messages)
        self.observer.settled(self.spec.queue, result)
        self._log_outcome(messages, settlement, result.stale, result.held)

    def _log_outcome(
        self, messages: list[Message], settlement: Settlement, stale: list[str], held: list[str]
    ) -> None:
        spec = self.spec
        if stale:
            # the leases expired before the outcomes arrived: name the likely cause, once a batch
            log.warning(
                "%d of %d outcomes of a batch from %s came after their leases had expired, so they "
                "changed nothing: the event loop was blocked, or the handler ran past the visibility "
                "timeout (%gs). Those messages are delivered again as suspects; ids=%s",
                len(stale),
                len(messages),
                spec.queue,
                spec.visibility_timeout,
                ",".join(lease_id.partition(".")[0] for lease_id in stale),
                extra={"queue": spec.queue, "outcome": "stale"},
            )
        level = logging.INFO if settlement.retries or settlement.dead_letters else logging.DEBUG
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
            if dead.lease_id in stale or dead.lease_id in held:
                continue  # not moved: lease lost, or held (the settle group said why, once)
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
