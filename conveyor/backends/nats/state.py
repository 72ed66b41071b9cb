"""One queue's state as a pure function of its log: no I/O, no clock of its own.

Every process that uses a queue applies the same records in the same order, each at the time the
server stored it (`now`), so every process computes the same state: who holds which lease, how
many attempts a message has had, what is visible. The rules are those of the memory engine, one
method per record kind; `view.py` feeds the records in and `backend.py` reads the results.

Per-message state lives in `Message` (attempts, lease token, dead-letter info) and nowhere else,
so a change to how attempts or leases are counted is a change to this file. Whatever changes a
message's fields calls `_changing` first: a snapshot being written holds it as it was (`freeze`).

Bodies are not held: a message knows where its body lies in the log (`Message.location`: the
record's stream sequence, the offset in its payload, the length), and whoever needs a body (a
lease, a peek, a move) reads that record (`view.py`). A compaction that would purge a record
holding a live body first writes those bodies again further on (a `rehome` record).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from conveyor.backends.base import expired_lease_counts, handed_token
from conveyor.backends.partitioning import dedup_key
from conveyor.headers import dead_letter_headers
from conveyor.types import (
    ContentType,
    DeadLetterInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
)

#: A record holds fewer than 2**ORDER_SHIFT messages: a message's order is its record's stream
#: sequence shifted left by this, plus its index in the record (ties on visible time go by it).
ORDER_SHIFT = 20


#: where a body lies in the log: (record's stream sequence, offset in its payload, length)
Location = tuple[int, int, int]


@dataclass(slots=True)
class Message:
    id: str
    content_type: ContentType
    timestamp: float
    visible_at: float
    order: int
    size: int
    record: int  # the stream sequence of the record holding the body ...
    offset: int  # ... and where the body starts in that record's payload
    attempts: int = 0
    lease_token: str | None = None
    version: int = 0
    dead_letter: DeadLetterInfo | None = None
    lost: int = 0  # deliveries in a row without an outcome
    headers: dict[str, str] | None = None
    group: str | None = None  # its ordered message group

    @property
    def location(self) -> Location:
        return self.record, self.offset, self.size

    def copy(self) -> Message:
        return Message(
            self.id,
            self.content_type,
            self.timestamp,
            self.visible_at,
            self.order,
            self.size,
            self.record,
            self.offset,
            self.attempts,
            self.lease_token,
            self.version,
            self.dead_letter,
            self.lost,
            self.headers,
            self.group,
        )

    def stored(self, queue: str, now: float, body: bytes) -> StoredMessage:
        return StoredMessage(
            id=self.id,
            queue=queue,
            body=body,
            content_type=self.content_type,
            timestamp=self.timestamp,
            attempts=self.attempts,
            visible_at=self.visible_at,
            leased=self.lease_token is not None and self.visible_at > now,
            dead_letter=self.dead_letter,
            headers=self.headers,
            group=self.group,
        )


class _Named(Protocol):
    """What deduplication reads of a message on its way in (an Arrival or a records.Outgoing)."""

    @property
    def id(self) -> str: ...

    @property
    def dedup_id(self) -> str | None: ...

    @property
    def group(self) -> str | None: ...


_Sent = TypeVar("_Sent", bound=_Named)


@dataclass(slots=True)
class Arrival:
    """A message as a record carries it, its body at `location`. `delay` None: the queue's
    delivery delay; `timestamp` None: the record's time (a replayed message keeps its first
    send time)."""

    id: str
    content_type: ContentType
    location: Location
    delay: float | None = None
    dead_letter: DeadLetterInfo | None = None
    timestamp: float | None = None
    dedup_id: str | None = None
    headers: dict[str, str] | None = None
    group: str | None = None


@dataclass(slots=True)
class Move:
    """Messages taken out of this queue for another (dead letters, a replay), waiting in the
    queue's outbox until their copy is stored there. `id` names the move; it is the copy
    record's Nats-Msg-Id, so writing the copy twice stores it once."""

    id: str
    destination: str
    copies: list[Arrival]
    started_at: float


@dataclass(slots=True)
class Settled:
    """A settle record's outcome: one status per item (acks, retries, dead letters: True where
    the lease was live), whether a retry made a message visible again, and the moves it began."""

    statuses: list[bool]
    retried: bool = False
    moves: list[Move] = field(default_factory=list)


@dataclass(slots=True)
class FrozenState:
    """A queue's state as it was when frozen (`QueueState.freeze`), for a snapshot written over
    many turns of the event loop while records keep being applied. The lists are copies; a
    message changed since is read from `before` (its copy from just before its first change),
    one deleted since is still in `messages` (nothing changes a deleted message), one added since
    is not. Outbox moves and dedup claims are replaced, never changed in place."""

    settings: QueueSettings
    paused: bool
    created_at: float
    now: float
    meta_seq: int
    messages: list[Message]
    outbox: list[Move]
    dedup: list[tuple[str, tuple[str, float]]]
    before: dict[str, Message]

    def message(self, message: Message) -> Message:
        """`message` as it was when frozen."""
        return self.before.get(message.id, message)


#: a lease as records name it: (message id, token)
LeaseKey = tuple[str, str]
#: a dead letter as a settle record names it: (message id, token, copy's id, dead-letter queue
#: or None to delete it, the record the core built)
DeadLetterItem = tuple[str, str, str, str | None, DeadLetterInfo]


class QueueState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.settings = QueueSettings()
        self.paused = False
        self.created_at = 0.0
        self.messages: dict[str, Message] = {}
        # (visible_at, order, id, version); entries whose version is stale are skipped
        self.heap: list[tuple[float, int, str, int]] = []
        self.outbox: dict[str, Move] = {}
        # dedup key (partitioning.dedup_key: scoped to a partition in a partitioned queue) -> (the
        # id of the first message naming it, when the claim ends)
        self.dedup: dict[str, tuple[str, float]] = {}
        # group -> its messages' ids in send order (an ordered set): only the first, the head,
        # is in the heap; the rest wait off it until the head is gone (acked, dead-lettered,
        # deleted), so a long group costs a lease nothing (docs/concepts/groups.md)
        self.groups: dict[str, dict[str, None]] = {}
        self.now = 0.0
        self.bytes = 0
        # a partition's log: the sequence of the queue's settings record its settings copy
        # (0: none yet, or not a partition)
        self.meta_seq = 0
        # while frozen: messages changed since, as they were (see freeze)
        self._before: dict[str, Message] | None = None
        self._frozen_below = 0

    # -- snapshots ---------------------------------------------------------------------------

    def freeze(self, orders_below: int) -> FrozenState:
        """The state as it is now, kept so until `thaw` however records change it meanwhile:
        every change to a message whose order is below `orders_below` (all of them now: the next
        record's first order) first keeps a copy of it. Cheap: copies of the containers only."""
        if self._before is not None:
            raise RuntimeError(f"queue {self.name}: its state is frozen already")
        self._before, self._frozen_below = {}, orders_below
        return FrozenState(
            self.settings,
            self.paused,
            self.created_at,
            self.now,
            self.meta_seq,
            list(self.messages.values()),
            list(self.outbox.values()),
            list(self.dedup.items()),
            self._before,
        )

    def thaw(self) -> None:
        self._before = None

    def _changing(self, message: Message) -> None:
        """Called before a message's snapshotted fields change while frozen (see freeze); callers
        check `_before` first (a lease or a settle changes many messages, nearly always unfrozen)."""
        before = self._before
        if before is not None and message.order < self._frozen_below and message.id not in before:
            before[message.id] = message.copy()

    # -- time --------------------------------------------------------------------------------

    def advance(self, timestamp: float) -> float:
        """The time a record applies at: its server timestamp, never earlier than the last one
        (a new stream leader's clock may be a little behind the old one's)."""
        if timestamp > self.now:
            self.now = timestamp
        return self.now

    # -- helpers -----------------------------------------------------------------------------

    def schedule(self, message: Message) -> None:
        message.version += 1
        if message.group is not None and next(iter(self.groups[message.group])) != message.id:
            return  # not its group's head: scheduled when it becomes the head
        heapq.heappush(self.heap, (message.visible_at, message.order, message.id, message.version))

    def add(self, message: Message) -> None:
        self.messages[message.id] = message
        self.bytes += message.size
        if message.group is not None:
            self.groups.setdefault(message.group, {})[message.id] = None
        self.schedule(message)

    def _delete(self, message: Message) -> bool:
        """Forget a message; True when it was its group's head and the next is deliverable."""
        del self.messages[message.id]
        self.bytes -= message.size
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

    def _live(self, lease: LeaseKey, now: float) -> Message | None:
        message = self.messages.get(lease[0])
        if message is None or message.lease_token != lease[1] or message.visible_at <= now:
            return None
        return message

    # -- settings ----------------------------------------------------------------------------

    def set_meta(self, settings: QueueSettings, paused: bool, created_at: float) -> bool:
        """Returns True when the queue was resumed (its messages may be deliverable again)."""
        resumed = self.paused and not paused
        self.settings, self.paused, self.created_at = settings, paused, created_at
        return resumed

    # -- records -----------------------------------------------------------------------------

    def refusal(self, arrivals: Sequence[Arrival], now: float) -> tuple[str, int, int, int] | None:
        """Why `arrivals` do not fit the queue's backlog limits: (limit, held, adding, maximum);
        None when they fit. Only what `send` would store counts (not a message already here nor
        a deduplicated one). Deterministic: every reader decides the same at the same record."""
        new = self.admitted(arrivals, now)
        return self.room_refusal(len(new), sum(a.location[2] for a in new))

    def room_refusal(
        self, count: int, adding: int, held: tuple[int, int] | None = None
    ) -> tuple[str, int, int, int] | None:
        """Why `count` more messages of `adding` bytes do not fit: as `refusal`. `held` (messages,
        bytes): what the queue holds, when that is more than this log (a partitioned queue's)."""
        if not count:
            return None
        messages, size = (len(self.messages), self.bytes) if held is None else held
        most_messages, most_bytes = self.settings.max_backlog_messages, self.settings.max_backlog_bytes
        if most_messages is not None and messages + count > most_messages:
            return "max_backlog_messages", messages, count, most_messages
        if most_bytes is not None and size + adding > most_bytes:
            return "max_backlog_bytes", size, adding, most_bytes
        return None

    def admitted(self, items: Sequence[_Sent], now: float) -> list[_Sent]:
        """The items `send` would store now, changing nothing: those not already here and not
        deduplicated (by a live claim of another message, or an earlier item naming its dedup id)."""
        window = self.settings.dedup_window_seconds
        claims: dict[str, str] = {}
        kept = []
        for item in items:
            if item.dedup_id is not None and window > 0:
                key = self._dedup_key(item.group, item.dedup_id, item.id)
                holder = claims.get(key)
                if holder is None:
                    claim = self.dedup.get(key)
                    holder = claim[0] if claim is not None and claim[1] > now else item.id
                    claims[key] = holder
                if holder != item.id:
                    continue
            if item.id not in self.messages:
                kept.append(item)
        return kept

    def send(self, arrivals: Sequence[Arrival], now: float, first_order: int) -> int:
        """Store arrivals not already here (a send retried after a lost reply is stored once),
        nor those naming a dedup id a live claim of another message holds (the first message
        naming it claims it for the queue's dedup window). Returns how many were stored."""
        stored = 0
        window = self.settings.dedup_window_seconds
        for index, arrival in enumerate(arrivals):
            if arrival.dedup_id is not None and window > 0:
                key = self._dedup_key(arrival.group, arrival.dedup_id, arrival.id)
                claim = self.dedup.get(key)
                if claim is not None and claim[1] > now and claim[0] != arrival.id:
                    continue
                self.dedup[key] = (arrival.id, now + window)
            if arrival.id in self.messages:
                continue
            delay = self.settings.delivery_delay if arrival.delay is None else arrival.delay
            record, offset, size = arrival.location
            message = Message(
                id=arrival.id,
                content_type=arrival.content_type,
                timestamp=now if arrival.timestamp is None else arrival.timestamp,
                visible_at=now if not delay else now + delay,  # shares the float when it can
                order=first_order + index,
                size=size,
                record=record,
                offset=offset,
                dead_letter=arrival.dead_letter,
                headers=arrival.headers,
                group=arrival.group,
            )
            self.add(message)
            stored += 1
        return stored

    def fan_out(self, moves: Iterable[Move]) -> None:
        """Copies a send wrote for other queues: they wait in the outbox until stored there."""
        for move in moves:
            self.outbox[move.id] = move

    def lease(
        self, limit: int, visibility_timeout: float, token: str, now: float, hand: int = 0
    ) -> list[Message]:
        """Lease up to `limit` visible messages under `token`. `hand` (a lease ahead,
        Backend.lease_ahead): when it took at least that many non-suspects (`lost` 0), the first
        `hand` of them are leased handed (`handed_token`), as if begun in the same record."""
        if self.paused:
            return []
        leased: list[Message] = []
        heap = self.heap
        while heap and len(leased) < limit and heap[0][0] <= now:
            _, _, message_id, version = heapq.heappop(heap)
            message = self.messages.get(message_id)
            if message is None or message.version != version:
                continue
            if self._before is not None:
                self._changing(message)
            if message.lease_token is not None:  # its last lease expired
                refunded, lost = expired_lease_counts(message.lease_token)
                message.attempts -= refunded
                message.lost += lost
            message.attempts += 1
            message.lease_token = token
            message.visible_at = now + visibility_timeout
            self.schedule(message)
            leased.append(message)
        if hand > 0:
            fresh = [message for message in leased if message.lost == 0]
            if len(fresh) >= hand:
                handed = handed_token(token)
                for message in fresh[:hand]:
                    message.lease_token = handed
        return leased

    def begin(self, leases: Iterable[LeaseKey], now: float) -> list[bool]:
        """Read-ahead leases handed to a handler: their token becomes the handed kind."""
        statuses = []
        for lease in leases:
            message = self._live(lease, now)
            if message is not None and message.lease_token is not None:
                if self._before is not None:
                    self._changing(message)
                message.lease_token = handed_token(message.lease_token)
            statuses.append(message is not None)
        return statuses

    def extend(self, leases: Iterable[LeaseKey], visibility_timeout: float, now: float) -> int:
        renewed = 0
        for lease in leases:
            message = self._live(lease, now)
            if message is not None:
                if self._before is not None:
                    self._changing(message)
                message.visible_at = now + visibility_timeout
                self.schedule(message)
                renewed += 1
        return renewed

    def release(self, leases: Iterable[LeaseKey], now: float) -> int:
        released = 0
        for lease in leases:
            message = self._live(lease, now)
            if message is not None:
                if self._before is not None:
                    self._changing(message)
                message.attempts -= 1
                message.lease_token = None
                message.visible_at = now
                self.schedule(message)
                released += 1
        return released

    def settle(
        self,
        acks: Sequence[LeaseKey],
        retries: Sequence[tuple[str, str, float]],
        dead_letters: Sequence[DeadLetterItem],
        move_id: str,
        now: float,
    ) -> Settled:
        """Acks, then retries (id, token, delay), then dead letters; a lease that is not live is
        stale and changes nothing. Dead letters for another queue wait in the outbox as one move
        per queue."""
        statuses: list[bool] = []
        retried = False  # or a group's head gone: its next is deliverable
        for lease in acks:
            message = self._live(lease, now)
            if message is not None:
                retried = self._delete(message) or retried
            statuses.append(message is not None)
        for message_id, token, delay in retries:
            message = self._live((message_id, token), now)
            if message is not None:
                if self._before is not None:
                    self._changing(message)
                message.lease_token = None
                message.lost = 0  # the delivery ended with an outcome
                message.visible_at = now + delay
                self.schedule(message)
                retried = True
            statuses.append(message is not None)
        moves: dict[str, Move] = {}
        for message_id, token, new_id, destination, record in dead_letters:
            message = self._live((message_id, token), now)
            statuses.append(message is not None)
            if message is None:
                continue
            retried = self._delete(message) or retried
            if destination is None:
                continue
            move = moves.get(destination)
            if move is None:
                move = moves[destination] = Move(f"{move_id}-{len(moves)}", destination, [], now)
            headers = {**(message.headers or {}), **dead_letter_headers(record)}
            move.copies.append(
                Arrival(
                    new_id,
                    message.content_type,
                    message.location,
                    0.0,
                    record,
                    now,
                    headers=headers,
                    group=message.group,
                )
            )
        for move in moves.values():
            self.outbox[move.id] = move
        return Settled(statuses, retried, list(moves.values()))

    def purge(self) -> int:
        count = len(self.messages)
        self.messages.clear()
        self.heap.clear()
        self.groups.clear()
        self.bytes = 0
        return count

    def delete(self, message_id: str, now: float) -> bool | None:
        """Delete one message unless a live lease holds it: True deleted, False no such message,
        None leased (nothing changed)."""
        message = self.messages.get(message_id)
        if message is None:
            return False
        if message.lease_token is not None and message.visible_at > now:
            return None
        self._delete(message)  # its heap entry is skipped as stale
        return True

    def move_out(self, destination: str, limit: int | None, move_id: str, now: float) -> Move:
        """Take up to `limit` unleased messages, oldest visible first, for `destination`: they
        keep id, body, content type, headers and send time, and start again at attempt 0."""
        movable = sorted(
            (m for m in self.messages.values() if m.lease_token is None or m.visible_at <= now),
            key=lambda m: (m.visible_at, m.order),
        )
        if limit is not None:
            movable = movable[:limit]
        copies = []
        for message in movable:
            self._delete(message)
            copies.append(
                Arrival(
                    message.id,
                    message.content_type,
                    message.location,
                    0.0,
                    None,
                    message.timestamp,
                    headers=message.headers,
                    group=message.group,
                )
            )
        move = Move(move_id, destination, copies, now)
        if copies:
            self.outbox[move.id] = move
        return move

    def rehome(self, bodies: Iterable[tuple[str, Location]]) -> None:
        """Bodies written again further on in the log: messages still here read them there."""
        for message_id, (record, offset, _) in bodies:
            message = self.messages.get(message_id)
            if message is not None:
                if self._before is not None:
                    self._changing(message)
                message.record, message.offset = record, offset

    def moved(self, move_ids: Iterable[str]) -> None:
        for move_id in move_ids:
            self.outbox.pop(move_id, None)

    def sweep(self, now: float) -> int:
        cutoff = now - self.settings.retention_seconds
        expired = [m for m in self.messages.values() if m.timestamp < cutoff]
        for message in expired:
            self._delete(message)
        for dedup_id in [key for key, (_, until) in self.dedup.items() if until <= now]:
            del self.dedup[dedup_id]
        return len(expired)

    def sweep_due(self, move_grace: float) -> float:
        """When a sweep first has work here (inf: never, as things stand): the oldest message
        passing retention, or the oldest move in the outbox waiting longer than `move_grace`."""
        due = float("inf")
        if self.messages:
            due = min(m.timestamp for m in self.messages.values()) + self.settings.retention_seconds
        if self.outbox:
            due = min(due, min(m.started_at for m in self.outbox.values()) + move_grace)
        return due

    # -- reading -----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the earliest message becomes (or became) visible; None when paused or empty."""
        if self.paused:
            return None
        heap = self.heap
        while heap:
            visible_at, _, message_id, version = heap[0]
            message = self.messages.get(message_id)
            if message is None or message.version != version:
                heapq.heappop(heap)
                continue
            return visible_at
        return None

    def stats(self, now: float) -> QueueStats:
        ready = delayed = in_flight = 0
        oldest = now
        for message in self.messages.values():
            oldest = min(oldest, message.timestamp)
            if message.visible_at <= now:
                ready += 1
            elif message.lease_token is not None:
                in_flight += 1
            else:
                delayed += 1
        return QueueStats(
            self.name, ready, delayed, in_flight, max(0.0, now - oldest), self.bytes, self.paused
        )

    def _dedup_key(self, group: str | None, dedup_id: str, message_id: str) -> str:
        return dedup_key(group, dedup_id, message_id, self.settings.partitions)

    def stored_as(self, group: str | None, dedup_id: str, message_id: str, now: float) -> str:
        """The id a message naming `dedup_id` is stored under, once its send was applied."""
        claim = self.dedup.get(self._dedup_key(group, dedup_id, message_id))
        return message_id if claim is None or claim[1] <= now else claim[0]

    def peek(self, limit: int) -> list[Message]:
        """Up to `limit` messages, oldest visible first."""
        if limit <= 0:
            return []
        return heapq.nsmallest(limit, self.messages.values(), key=lambda m: (m.visible_at, m.order))

    def peek_sent(self, limit: int) -> list[Message]:
        """Up to `limit` messages in the order they were sent (a partitioned queue's peek merges
        its partitions by send time)."""
        if limit <= 0:
            return []
        return heapq.nsmallest(limit, self.messages.values(), key=lambda m: (m.timestamp, m.order))
