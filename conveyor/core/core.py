"""Core: one engine, connected once, with the bookkeeping every producer and consumer shares.

App builds one and hands it to Queue, Topic, the consumer runtime, Worker and Env. It holds what
is neither user API nor storage: connecting once (and the closed state), group commit of sends,
queues created on first use, the paused check of a pull, the settle policy, and the sync portal
that runs the async API for code with no event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from conveyor import limits as L
from conveyor.backends.base import Backend, SendsInTransaction, parse_lease_id
from conveyor.core import settle as settle_policy
from conveyor.core.group_commit import GroupCommitter
from conveyor.core.sync_portal import SyncPortal
from conveyor.errors import AppClosed, BackendUnavailable, QueueNotFound, QueuePaused, StorageFull
from conveyor.limits import Limits
from conveyor.types import (
    SYSTEM_CLOCK,
    Clock,
    Lease,
    OutgoingMessage,
    PullConsumer,
    QueueInfo,
    QueueSettings,
    Settlement,
    SettleResult,
)

T = TypeVar("T")
log = logging.getLogger("conveyor.core")


class Core:
    """A connected engine and its shared state. Cheap to build; connects on first use."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = SYSTEM_CLOCK,
        limits: Limits | None = None,
        auto_create: bool = True,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.limits = limits or Limits()
        #: create a queue on first use (else an unknown queue is QueueNotFound)
        self.auto_create = auto_create
        self.closed = False
        self._known_queues: set[str] = set()
        self._connect_lock = asyncio.Lock()
        self._is_connected = False
        self._committer = GroupCommitter(self._write_now)
        self._portal: SyncPortal | None = None
        #: queue -> (monotonic time it is good until, its pull consumer settings)
        self._pull_consumers: dict[str, tuple[float, PullConsumer | None]] = {}
        self._sync_core: Core | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def connected(self) -> Backend:
        """The engine, connected (once, however many callers ask at the same time)."""
        if self.closed:
            raise AppClosed("this App is closed")
        if not self._is_connected:
            async with self._connect_lock:
                if not self._is_connected:
                    await self.backend.connect()
                    self._is_connected = True
        return self.backend

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sync_core is not None and self._portal is not None:
            self._portal.run(self._sync_core.close())
        if self._portal is not None:
            self._portal.stop()
        await self.backend.close()

    # -- queues ------------------------------------------------------------------------------

    @property
    def known_queues(self) -> frozenset[str]:
        """Queues this process has created or used (no round trip needed to know they exist)."""
        return frozenset(self._known_queues)

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        backend = await self.connected()
        info = await backend.create_queue(name, settings, exist_ok=exist_ok)
        self._known_queues.add(name)
        return info

    async def delete_queue(self, name: str) -> bool:
        backend = await self.connected()
        self._known_queues.discard(name)
        self._pull_consumers.pop(name, None)
        return await backend.delete_queue(name)

    async def ensure_queue(self, name: str) -> None:
        """Create `name` with default settings unless it exists (QueueNotFound if auto_create is off)."""
        if name in self._known_queues:
            return
        backend = await self.connected()
        # read first: a queue that exists needs no write (on a full disk a consumer starts and drains)
        if await backend.get_queue(name) is None:
            if not self.auto_create:
                raise QueueNotFound(name)
            await backend.create_queue(name, QueueSettings(), exist_ok=True)
        self._known_queues.add(name)

    async def require_queue(self, name: str) -> None:
        """QueueNotFound unless `name` exists; never creates it."""
        if name in self._known_queues:
            return
        backend = await self.connected()
        if await backend.get_queue(name) is None:
            raise QueueNotFound(name)
        self._known_queues.add(name)

    async def check_not_paused(self, name: str) -> None:
        """QueuePaused if delivery on `name` is paused (and QueueNotFound for an unknown queue
        when auto_create is off): why a pull found nothing."""
        info = await self.backend.get_queue(name)
        if info is None:
            if not self.auto_create:
                raise QueueNotFound(name)
        elif info.paused:
            raise QueuePaused(name)

    async def pull_consumer(self, name: str) -> PullConsumer | None:
        """The queue's pull consumer settings, read at most every PULL_CONSUMER_CACHE_SECONDS (a
        pull need not read the queue's settings each time); None for none or no queue."""
        cached = self._pull_consumers.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        backend = await self.connected()
        info = await backend.get_queue(name)
        consumer = None if info is None else info.settings.pull_consumer
        if info is not None:
            self._pull_consumers[name] = (now + L.PULL_CONSUMER_CACHE_SECONDS, consumer)
        return consumer

    def forget_pull_consumer(self, name: str) -> None:
        """Read the queue's pull consumer again at the next pull (this process changed it)."""
        self._pull_consumers.pop(name, None)

    async def sweep(self) -> int:
        """Delete messages past their queue's retention now."""
        backend = await self.connected()
        return await backend.sweep()

    # -- writing -----------------------------------------------------------------------------

    async def write(self, messages: Sequence[OutgoingMessage], *, connection: Any = None) -> list[str]:
        """Store `messages` (all or none), creating unknown queues when auto_create is on;
        returns the id each is stored under (a deduplicated one's is the first message's).

        Concurrent writes are group-committed; each returns once its own messages are durable.
        `connection` writes inside the caller's open transaction instead, on an engine that can
        (`SendsInTransaction`).
        """
        if self.closed or not self._is_connected:  # the hot path skips a coroutine call
            await self.connected()
        if connection is None:
            return await self._committer.submit(messages)
        backend = self.transactional()
        return await self._with_queues_created(
            lambda: backend.send_many_in(connection, messages), len(messages)
        )

    def transactional(self) -> SendsInTransaction:
        """The engine, if it can write inside the caller's transaction; else TypeError."""
        backend = self.backend
        if not isinstance(backend, SendsInTransaction):
            raise TypeError(
                f"the {backend.engine} engine cannot write inside your transaction: "
                "connection= needs PostgreSQL"
            )
        return backend

    async def _write_now(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Store `messages`; an unconfirmed write (the engine unreachable, the reply lost) is
        tried again with the same ids for up to SEND_RETRY_SECONDS after its first failure:
        every engine stores an id once, so a write that did commit is not stored twice. A full
        disk is not retried."""
        deadline: float | None = None
        delay = L.SEND_RETRY_FIRST_SECONDS
        while True:
            try:
                return await self._with_queues_created(
                    lambda: self.backend.send_many(messages), len(messages)
                )
            except StorageFull:
                raise
            except BackendUnavailable as exc:
                if deadline is None:  # counted from the first failure: a driver may take long to fail
                    deadline = time.monotonic() + L.SEND_RETRY_SECONDS
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "sending %d messages failed (%s); trying again with the same ids in %.1fs",
                    len(messages),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, L.SEND_RETRY_MAX_SECONDS)

    async def _with_queues_created(self, send: Callable[[], Awaitable[list[str]]], count: int) -> list[str]:
        # Unknown queues are created on first use; the common case pays no extra round trip.
        for _ in range(count + 1):
            try:
                return await send()
            except QueueNotFound as exc:
                self._known_queues.discard(exc.queue)
                if not self.auto_create:
                    raise
                await self.ensure_queue(exc.queue)
        raise RuntimeError("queues kept disappearing while sending")  # pragma: no cover

    # -- leases and outcomes -----------------------------------------------------------------

    def _leases(self, lease_ids: Sequence[str]) -> list[Lease]:
        """The well-formed lease ids, parsed; the others name no live lease anyway."""
        rows = self.backend.lease_rows
        return [lease for lease in (parse_lease_id(i, rows) for i in lease_ids) if lease is not None]

    async def extend_leases(self, queue: str, lease_ids: Sequence[str], visibility_timeout: float) -> int:
        """Push live leases' deadlines to now + `visibility_timeout`; returns how many were live."""
        leases = self._leases(lease_ids)
        if not leases:
            return 0
        backend = await self.connected()
        return await backend.extend_leases(queue, leases, visibility_timeout)

    async def begin(self, queue: str, lease_ids: Sequence[str]) -> list[bool]:
        """Mark read-ahead leases as handed to a handler, durably; one status per lease id:
        False where it was not live (or not a lease id at all)."""
        rows = self.backend.lease_rows
        parsed = [parse_lease_id(i, rows) for i in lease_ids]
        leases = [lease for lease in parsed if lease is not None]
        if not leases:
            return [False] * len(lease_ids)
        backend = await self.connected()
        statuses = iter(await backend.begin(queue, leases))
        return [lease is not None and next(statuses) for lease in parsed]

    async def live_leases(self, queue: str, lease_ids: Sequence[str], visibility_timeout: float) -> set[str]:
        """Extend the leases named by `lease_ids` (each once); returns those that were live.

        One engine call when every lease is live; when some were not (rare: a consumer that
        waited too long), each lease is extended again on its own to tell which, which changes
        nothing more (a deadline of now + timeout, a moment later)."""
        rows = self.backend.lease_rows
        parsed = {lease_id: parse_lease_id(lease_id, rows) for lease_id in dict.fromkeys(lease_ids)}
        well_formed = {lease_id: lease for lease_id, lease in parsed.items() if lease is not None}
        if not well_formed:
            return set()
        backend = await self.connected()
        live = await backend.extend_leases(queue, list(well_formed.values()), visibility_timeout)
        if live == len(well_formed):
            return set(well_formed)
        return {
            lease_id
            for lease_id, lease in well_formed.items()
            if await backend.extend_leases(queue, [lease], visibility_timeout)
        }

    async def release(self, queue: str, lease_ids: Sequence[str]) -> int:
        """Give leased messages back at once, as if never delivered; returns how many were live."""
        leases = self._leases(lease_ids)
        if not leases:
            return 0
        backend = await self.connected()
        return await backend.release(queue, leases)

    async def settle(self, queue: str, settlement: Settlement) -> SettleResult:
        """Write one batch's outcomes in one engine call (see conveyor/core/settle.py).

        An expired, unknown, malformed or repeated lease id is reported in `stale` and changes
        nothing. QueueNotFound, changing nothing, when the queue or a dead-letter queue is missing.
        """
        if self.closed or not self._is_connected:  # the hot path skips a coroutine call
            await self.connected()
        backend = self.backend
        checked = settle_policy.check(queue, settlement, rows=backend.lease_rows, now=self.clock.now())
        for name in checked.dead_letter_queues:
            await self.require_queue(name)
        if not checked.named:
            return settle_policy.result(checked, [])
        try:
            statuses = await backend.settle(queue, checked.outcomes)
        except QueueNotFound as exc:
            self._known_queues.discard(exc.queue)
            raise
        return settle_policy.result(checked, statuses)

    # -- the blocking facade -----------------------------------------------------------------

    def run_sync(self, call: Callable[[Core], Awaitable[T]]) -> T:
        """Run `call` on a sibling Core living on a private event loop, and wait for its result
        (for `send_sync` and friends, from code with no event loop)."""
        if self.closed:
            raise AppClosed("this App is closed")
        if self._portal is None:
            self._portal = SyncPortal()
        if self._sync_core is None:
            self._sync_core = Core(
                self.backend.sibling(), clock=self.clock, limits=self.limits, auto_create=self.auto_create
            )
        sync_core = self._sync_core

        async def run() -> T:
            return await call(sync_core)

        return self._portal.run(run())
