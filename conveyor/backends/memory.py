"""memory:// — a complete in-process engine for tests and examples (not a mock).

State lives in a `MemoryStore` shared by sibling backends (one per event loop), guarded by a
lock; no operation awaits while holding it, so every batch operation is atomic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.backends.base import (
    Backend,
    expired_lease_counts,
    handed_token,
    make_lease_id,
    new_token,
)
from conveyor.backends.partitioning import dedup_key
from conveyor.errors import MessageLeased, QueueAlreadyExists, QueueNotFound
from conveyor.headers import dead_letter_headers
from conveyor.limits import backlog_added, check_room
from conveyor.types import (
    SYSTEM_CLOCK,
    Clock,
    ContentType,
    DeadLetterInfo,
    Lease,
    LeasedMessage,
    Outcomes,
    OutgoingMessage,
    QueueInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
    Subscription,
    WorkerInfo,
)


@dataclass(slots=True)
class _Message:
    # what a send gives first, in this order: _store() passes them by position (keywords cost
    # a send 0.3 us a message)
    id: str
    body: bytes
    content_type: ContentType
    timestamp: float
    visible_at: float
    seq: int
    dead_letter: DeadLetterInfo | None = None
    headers: dict[str, str] | None = None
    group: str | None = None
    attempts: int = 0
    lease_token: str | None = None
    version: int = 0
    lost: int = 0  # deliveries in a row without an outcome

    def stored(self, queue: str, now: float) -> StoredMessage:
        return StoredMessage(
            id=self.id,
            queue=queue,
            body=self.body,
            content_type=self.content_type,
            timestamp=self.timestamp,
            attempts=self.attempts,
            visible_at=self.visible_at,
            leased=self.lease_token is not None and self.visible_at > now,
            dead_letter=self.dead_letter,
            headers=self.headers,
            group=self.group,
        )


# (visible_at, seq, id, version) of a message's scheduling; stale once its version is not the message's
_Entry = tuple[float, int, str, int]


@dataclass(slots=True)
class _Queue:
    info: QueueInfo
    messages: dict[str, _Message] = field(default_factory=dict)
    # (visible_at, seq, id, version); entries whose version is stale are skipped.
    heap: list[_Entry] = field(default_factory=list)
    # a send's entries, in the order they fall due: one not before the last is appended here
    # instead of pushed on the heap (a popleft takes no comparisons, a heappop of a backlog's
    # heap ~16); the next due is the earlier of the two fronts
    sent: deque[_Entry] = field(default_factory=deque)
    # dedup key (partitioning.dedup_key) -> (the first message's id, when the claim expires)
    dedup: dict[str, tuple[str, float]] = field(default_factory=dict)
    # group -> its messages' ids in send order (an ordered set): only the first, the group's
    # head, is scheduled; the others wait unscheduled until the head is gone (acked, dead-lettered,
    # deleted), so that a long group costs a lease nothing
    groups: dict[str, dict[str, None]] = field(default_factory=dict)
    # the bytes of the bodies in `messages`, kept as they come and go: a bounded queue's send
    # checks its room without summing every body
    size: int = 0

    def schedule(self, message: _Message) -> None:
        message.version += 1
        if message.group is not None and next(iter(self.groups[message.group])) != message.id:
            return  # not its group's head: scheduled when it becomes the head
        heapq.heappush(self.heap, (message.visible_at, message.seq, message.id, message.version))

    def add(self, message: _Message) -> None:
        self.messages[message.id] = message
        self.size += len(message.body)
        if message.group is None:  # schedule() without its call: every send runs this
            message.version += 1
            entry = (message.visible_at, message.seq, message.id, message.version)
            if not self.sent or entry >= self.sent[-1]:
                self.sent.append(entry)
            else:  # due before a message sent earlier (a shorter delay)
                heapq.heappush(self.heap, entry)
            return
        self.groups.setdefault(message.group, {})[message.id] = None
        self.schedule(message)

    def first(self) -> _Entry | None:
        """The entry due first, stale or not; None when there is none."""
        heap, sent = self.heap, self.sent
        if sent and (not heap or sent[0] < heap[0]):
            return sent[0]
        return heap[0] if heap else None

    def pop_due(self, now: float) -> _Entry | None:
        """Take the entry due first if it is due at `now` (stale or not)."""
        heap, sent = self.heap, self.sent
        if sent and (not heap or sent[0] < heap[0]):
            return sent.popleft() if sent[0][0] <= now else None
        return heapq.heappop(heap) if heap and heap[0][0] <= now else None

    def remove(self, message: _Message) -> bool:
        """Forget a message; the next of its group, if it was the head, becomes deliverable
        (then True: waiters are to be woken)."""
        del self.messages[message.id]
        self.size -= len(message.body)
        if not self.messages:  # every entry left is stale: drop them at once
            self.heap.clear()
            self.sent.clear()
        if message.group is None:
            return False
        members = self.groups[message.group]
        was_head = next(iter(members)) == message.id
        del members[message.id]
        if not members:
            del self.groups[message.group]
        elif was_head:
            self.schedule(self.messages[next(iter(members))])
            return True
        return False

    def clear(self) -> None:
        self.messages.clear()
        self.heap.clear()
        self.sent.clear()
        self.groups.clear()
        self.size = 0


class MemoryStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, _Queue] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.seq = itertools.count()
        self.waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def notify(self, queue: str) -> None:
        for loop, future in self.waiters.pop(queue, []):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MemoryBackend(Backend):
    engine = "memory"

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, store: MemoryStore | None = None) -> None:
        super().__init__(url, clock=clock)
        self.store = store if store is not None else MemoryStore()

    def sibling(self) -> MemoryBackend:
        return MemoryBackend(self.url, clock=self.clock, store=self.store)

    def _queue(self, name: str) -> _Queue:
        queue = self.store.queues.get(name)
        if queue is None:
            raise QueueNotFound(name)
        return queue

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        with self.store.lock:
            existing = self.store.queues.get(name)
            if existing is not None:
                if exist_ok:
                    return existing.info
                raise QueueAlreadyExists(name)
            info = QueueInfo(name=name, settings=settings, paused=False, created_at=self.clock.now())
            self.store.queues[name] = _Queue(info)
            return info

    async def get_queue(self, name: str) -> QueueInfo | None:
        with self.store.lock:
            queue = self.store.queues.get(name)
            return None if queue is None else queue.info

    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        with self.store.lock:
            queue = self._queue(name)
            queue.info = QueueInfo(name, settings, queue.info.paused, queue.info.created_at)
            return queue.info

    async def delete_queue(self, name: str) -> bool:
        with self.store.lock:
            for key in [key for key in self.store.subscriptions if key[1] == name]:
                del self.store.subscriptions[key]
            return self.store.queues.pop(name, None) is not None

    async def list_queues(self) -> list[QueueInfo]:
        with self.store.lock:
            return sorted((q.info for q in self.store.queues.values()), key=lambda info: info.name)

    async def set_paused(self, name: str, paused: bool) -> None:
        with self.store.lock:
            queue = self._queue(name)
            queue.info = QueueInfo(name, queue.info.settings, paused, queue.info.created_at)
            if not paused:
                self.store.notify(name)

    # -- topic subscriptions ------------------------------------------------------------------

    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        with self.store.lock:
            existing = self.store.subscriptions.get((topic, queue))
            created_at = existing.created_at if existing is not None else self.clock.now()
            subscription = Subscription(topic, queue, None if types is None else tuple(types), created_at)
            self.store.subscriptions[(topic, queue)] = subscription
            return subscription

    async def remove_subscription(self, topic: str, queue: str) -> bool:
        with self.store.lock:
            return self.store.subscriptions.pop((topic, queue), None) is not None

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        with self.store.lock:
            return [
                subscription
                for key, subscription in sorted(self.store.subscriptions.items())
                if topic is None or key[0] == topic
            ]

    # -- worker heartbeats ---------------------------------------------------------------------

    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        with self.store.lock:
            workers = self.store.workers
            for stale in [key for key, seen in workers.items() if seen.seen_at < worker.seen_at - ttl]:
                del workers[stale]
            workers[worker.id] = worker

    async def list_workers(self, since: float) -> list[WorkerInfo]:
        with self.store.lock:
            return [worker for _, worker in sorted(self.store.workers.items()) if worker.seen_at >= since]

    async def forget_worker(self, worker_id: str) -> None:
        with self.store.lock:
            self.store.workers.pop(worker_id, None)

    # -- messages ----------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        with self.store.lock:
            targets = {name: self._queue(name) for name in dict.fromkeys(m.queue for m in messages)}
            now = self.clock.now()
            if all(m.dedup_id is None for m in messages) and not any(
                queue.info.settings.bounded for queue in targets.values()
            ):  # nothing to claim or count: every message is stored (once per id)
                self._store(targets, messages, now)
                return [m.id for m in messages]
            # deduplication first, changing nothing yet: a deduplicated message takes no room
            ids: list[str] = []
            stored: list[OutgoingMessage] = []
            claims: dict[tuple[str, str], tuple[str, float]] = {}
            for outgoing in messages:
                queue = targets[outgoing.queue]
                window = queue.info.settings.dedup_window_seconds
                if outgoing.dedup_id is not None and window > 0:
                    scoped = dedup_key(
                        outgoing.group, outgoing.dedup_id, outgoing.id, queue.info.settings.partitions
                    )
                    key = (outgoing.queue, scoped)
                    claim = claims.get(key) or queue.dedup.get(scoped)
                    if claim is not None and claim[1] > now and claim[0] != outgoing.id:
                        ids.append(claim[0])  # sent within the window: stored once
                        continue
                    claims[key] = (outgoing.id, now + window)
                ids.append(outgoing.id)
                if outgoing.id not in queue.messages:  # an id is stored once, as on every engine
                    stored.append(outgoing)
            for name, adding in backlog_added(stored).items():
                queue = targets[name]
                if queue.info.settings.bounded:
                    check_room(name, queue.info.settings, (len(queue.messages), queue.size), adding)
            for (name, dedup_id), claim in claims.items():
                targets[name].dedup[dedup_id] = claim
            self._store(targets, stored, now)
            return ids

    def _store(self, targets: dict[str, _Queue], messages: Sequence[OutgoingMessage], now: float) -> None:
        """Add each of `messages` to its queue in `targets` unless its id is there already (an id
        is stored once, as on every engine), then wake the waiters of the queues that got one.
        Under the store's lock."""
        seq = self.store.seq
        woken: set[str] = set()
        for outgoing in messages:
            queue = targets[outgoing.queue]
            if outgoing.id in queue.messages:
                continue
            delay = outgoing.delay_seconds
            if delay is None:
                delay = queue.info.settings.delivery_delay
            queue.add(
                _Message(
                    outgoing.id,
                    outgoing.body,
                    outgoing.content_type,
                    now,
                    now + delay,
                    next(seq),
                    outgoing.dead_letter,
                    outgoing.headers,
                    outgoing.group,
                )
            )
            woken.add(outgoing.queue)
        for name in woken:
            self.store.notify(name)

    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        with self.store.lock:
            state = self.store.queues.get(queue)
            if state is None or state.info.paused:
                return []
            now = self.clock.now()
            token = new_token(handed)
            leased: list[LeasedMessage] = []
            heap, messages = state.heap, state.messages
            until = now + visibility_timeout
            while len(leased) < limit:
                entry = state.pop_due(now)
                if entry is None:
                    break
                _, _, message_id, version = entry
                message = messages.get(message_id)
                if message is None or message.version != version:
                    continue
                if message.lease_token is not None:  # its last lease expired
                    refunded, lost = expired_lease_counts(message.lease_token)
                    message.attempts -= refunded
                    message.lost += lost
                message.attempts += 1
                message.lease_token = token
                message.visible_at = until
                # schedule() without its group check: only a group's head is ever scheduled
                message.version += 1
                heapq.heappush(heap, (until, message.seq, message_id, message.version))
                leased.append(
                    LeasedMessage(
                        message_id,
                        queue,
                        message.body,
                        message.content_type,
                        message.timestamp,
                        message.attempts,
                        make_lease_id(message_id, token),
                        message.dead_letter,
                        message.lost,
                        message.headers,
                        message.group,
                    )
                )
            return leased

    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        with self.store.lock:
            state = self.store.queues.get(queue)
            if state is None:
                return [False] * len(leases)
            now = self.clock.now()
            statuses = []
            for lease in leases:
                message = self._live(state, lease, now)
                if message is not None and message.lease_token is not None:
                    message.lease_token = handed_token(message.lease_token)
                statuses.append(message is not None)
            return statuses

    def _live(self, state: _Queue, lease: Lease, now: float) -> _Message | None:
        message = state.messages.get(lease[0])
        if message is None or message.lease_token != lease[1] or message.visible_at <= now:
            return None
        return message

    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        with self.store.lock:
            state = self.store.queues.get(queue)
            if state is None:
                return 0
            now = self.clock.now()
            renewed = 0
            for lease in leases:
                message = self._live(state, lease, now)
                if message is not None:
                    message.visible_at = now + visibility_timeout
                    state.schedule(message)
                    renewed += 1
            return renewed

    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        with self.store.lock:
            state = self.store.queues.get(queue)
            if state is None:
                return 0
            now = self.clock.now()
            released = 0
            for lease in leases:
                message = self._live(state, lease, now)
                if message is not None:
                    message.attempts -= 1
                    message.lease_token = None
                    message.visible_at = now
                    state.schedule(message)
                    released += 1
            if released:
                self.store.notify(queue)
            return released

    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        with self.store.lock:
            state = self._queue(queue)
            for move in outcomes.dead_letters:
                if move.queue is not None:
                    self._queue(move.queue)  # missing DLQ: fail before changing anything
            now = self.clock.now()
            statuses: list[bool] = []
            wake = False  # a retry, or a group's head gone: the queue's waiters have work
            for lease in outcomes.acks:
                message = self._live(state, lease, now)
                if message is not None:
                    wake = state.remove(message) or wake
                statuses.append(message is not None)
            for lease, delay in outcomes.retries:
                message = self._live(state, lease, now)
                if message is not None:
                    message.lease_token = None
                    message.lost = 0  # the delivery ended with an outcome
                    message.visible_at = now + delay
                    state.schedule(message)
                    wake = True
                statuses.append(message is not None)
            for move in outcomes.dead_letters:
                message = self._live(state, move.lease, now)
                statuses.append(message is not None)
                if message is None:
                    continue
                wake = state.remove(message) or wake
                if move.queue is None:
                    continue
                target = self.store.queues[move.queue]
                copy = _Message(
                    id=move.new_id,
                    body=message.body,
                    content_type=message.content_type,
                    timestamp=now,
                    visible_at=now,
                    seq=next(self.store.seq),
                    dead_letter=move.record,
                    headers={**(message.headers or {}), **dead_letter_headers(move.record)},
                    group=message.group,
                )
                target.add(copy)
                self.store.notify(move.queue)
            if wake:
                self.store.notify(queue)
            return statuses

    async def stats(self, queue: str) -> QueueStats:
        with self.store.lock:
            state = self._queue(queue)
            now = self.clock.now()
            ready = delayed = in_flight = size = 0
            oldest = now
            for message in state.messages.values():
                size += len(message.body)
                oldest = min(oldest, message.timestamp)
                if message.visible_at <= now:
                    ready += 1
                elif message.lease_token is not None:
                    in_flight += 1
                else:
                    delayed += 1
            return QueueStats(
                queue, ready, delayed, in_flight, max(0.0, now - oldest), size, state.info.paused
            )

    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        with self.store.lock:
            state = self._queue(queue)
            now = self.clock.now()
            ordered = sorted(state.messages.values(), key=lambda m: (m.visible_at, m.seq))
            return [m.stored(queue, now) for m in ordered[:limit]]

    async def purge(self, queue: str) -> int:
        with self.store.lock:
            state = self._queue(queue)
            count = len(state.messages)
            state.clear()
            return count

    async def delete_message(self, queue: str, message_id: str) -> bool:
        with self.store.lock:
            state = self._queue(queue)
            message = state.messages.get(message_id)
            if message is None:
                return False
            if message.lease_token is not None and message.visible_at > self.clock.now():
                raise MessageLeased(queue, message_id)
            # its heap entry is skipped as stale; a group's head gone makes its next deliverable
            if state.remove(message):
                self.store.notify(queue)
            return True

    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        with self.store.lock:
            src = self._queue(source)
            dst = self._queue(destination)
            now = self.clock.now()
            movable = sorted(
                (m for m in src.messages.values() if m.lease_token is None or m.visible_at <= now),
                key=lambda m: (m.visible_at, m.seq),
            )
            if limit is not None:
                movable = movable[:limit]
            for message in movable:
                if src.remove(message):
                    self.store.notify(source)
                moved = _Message(
                    id=message.id,
                    body=message.body,
                    content_type=message.content_type,
                    timestamp=message.timestamp,
                    visible_at=now,
                    seq=next(self.store.seq),
                    headers=message.headers,
                    group=message.group,
                )
                dst.add(moved)
            if movable:
                self.store.notify(destination)
            return len(movable)

    async def sweep(self) -> int:
        with self.store.lock:
            now = self.clock.now()
            removed = 0
            for name, state in self.store.queues.items():
                cutoff = now - state.info.settings.retention_seconds
                expired = [m for m in state.messages.values() if m.timestamp < cutoff]
                for message in expired:
                    if state.remove(message):  # a group's head: its next is deliverable
                        self.store.notify(name)
                removed += len(expired)
                for dedup_id in [key for key, (_, until) in state.dedup.items() if until <= now]:
                    del state.dedup[dedup_id]
            return removed

    def _next_due(self, state: _Queue, now: float) -> float | None:
        while (entry := state.first()) is not None:
            visible_at, _, message_id, version = entry
            message = state.messages.get(message_id)
            if message is None or message.version != version:
                state.pop_due(visible_at)  # that stale entry
                continue
            return visible_at
        return None

    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self.store.lock:
            state = self.store.queues.get(queue)
            if state is not None and not state.info.paused:
                due = self._next_due(state, self.clock.now())
                if due is not None:
                    timeout = min(timeout, max(0.0, due - self.clock.now()))
            if timeout <= 0:
                return
            self.store.waiters.setdefault(queue, []).append((loop, future))
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait([future, sleeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            with self.store.lock:
                waiters = self.store.waiters.get(queue)
                if waiters is not None and (loop, future) in waiters:
                    waiters.remove((loop, future))
