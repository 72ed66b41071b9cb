"""Shared aliases and small dataclasses passed between the layers: the clock, queue settings and
stats, messages on their way in and out, and a batch's outcomes."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ContentType = Literal["json", "text", "bytes"]
CONTENT_TYPES: tuple[ContentType, ...] = ("json", "text", "bytes")


class Clock(Protocol):
    """Time as the core and the embedded engines see it; tests swap in `conveyor.testing.FakeClock`."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class PullConsumer:
    """A queue's HTTP pull consumer settings (`wrangler queues consumer http add`): what a pull
    that names no batch size or visibility timeout gets, and when a pulled message stops being
    retried. Checked by `App.set_pull_consumer`; engines store it as `to_dict` gives it."""

    batch_size: int = 5
    #: retries after the first delivery; a pulled message retried past it, or leased again after
    #: max_retries + 1 deliveries, goes to `dead_letter_queue` (deleted when that is None)
    max_retries: int = 3
    #: seconds a retry that names no delay waits
    retry_delay: float = 0.0
    visibility_timeout: float = 30.0
    dead_letter_queue: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form engines store and the API shows."""
        return {
            "batch_size": self.batch_size,
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "visibility_timeout": self.visibility_timeout,
            "dead_letter_queue": self.dead_letter_queue,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PullConsumer:
        """The inverse of `to_dict`."""
        dead_letter_queue = data.get("dead_letter_queue")
        return cls(
            batch_size=int(data["batch_size"]),
            max_retries=int(data["max_retries"]),
            retry_delay=float(data["retry_delay"]),
            visibility_timeout=float(data["visibility_timeout"]),
            dead_letter_queue=None if dead_letter_queue is None else str(dead_letter_queue),
        )

    def to_json(self) -> str:
        """`to_dict` as compact JSON: how the SQL and Redis engines store it."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> PullConsumer | None:
        """A stored consumer, or None for an empty or missing one."""
        return cls.from_dict(json.loads(text)) if text else None


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's stored settings. A backlog limit of None means no limit."""

    delivery_delay: float = 0.0
    retention_seconds: float = 345_600.0
    #: a send naming a dedup id seen this recently stores nothing (0: no deduplication)
    dedup_window_seconds: float = 300.0
    #: the most messages the queue may hold (ready, delayed and in flight); a send past it is QueueFull
    max_backlog_messages: int | None = None
    #: the most bytes of bodies the queue may hold; a send past it is QueueFull
    max_backlog_bytes: int | None = None
    #: the queue's HTTP pull consumer (None: pulls get the defaults, and no retry limit applies)
    pull_consumer: PullConsumer | None = None
    #: how many partitions the queue spreads over, fixed at creation (docs/concepts/groups.md)
    partitions: int = 1

    @property
    def bounded(self) -> bool:
        """Whether sends must check the queue's room."""
        return self.max_backlog_messages is not None or self.max_backlog_bytes is not None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's name, settings, pause state and creation time (seconds since the epoch)."""

    name: str
    settings: QueueSettings
    paused: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable topic subscription: every message published to `topic` whose `type` is in
    `types` (or any type, when `types` is None) is copied into `queue`."""

    topic: str
    queue: str
    types: tuple[str, ...] | None
    created_at: float

    def matches(self, message_type: str | None) -> bool:
        """Whether a message of this type is copied into the subscription's queue."""
        return self.types is None or (message_type is not None and message_type in self.types)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as its last heartbeat described it (`conveyor workers`, the dashboard).
    Times are seconds since the epoch, on the worker's host."""

    #: unique per worker run: host, pid and a random part
    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    #: batches it may run at once, all consumers together (autoscaled ones at their ceiling)
    concurrency: int
    started_at: float
    seen_at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form engines store and the API shows."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerInfo:
        """The inverse of `to_dict`."""
        return cls(
            id=str(data["id"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            queues=tuple(str(queue) for queue in data["queues"]),
            concurrency=int(data["concurrency"]),
            started_at=float(data["started_at"]),
            seen_at=float(data["seen_at"]),
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's contents at one moment.

    `backlog` counts messages ready for delivery now; `delayed` those not visible yet;
    `in_flight` those leased to a consumer. `total` is all three.
    """

    queue: str
    backlog: int
    delayed: int
    in_flight: int
    oldest_age_seconds: float
    bytes: int
    paused: bool

    @property
    def total(self) -> int:
        """Every message the queue holds: backlog + delayed + in flight."""
        return self.backlog + self.delayed + self.in_flight


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """Where a dead-lettered message came from and why it failed."""

    original_id: str
    source_queue: str
    attempts: int
    error: str
    dead_lettered_at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the CLI and the HTTP API."""
        return {
            "original_id": self.original_id,
            "source_queue": self.source_queue,
            "attempts": self.attempts,
            "error": self.error,
            "dead_lettered_at": self.dead_lettered_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeadLetterInfo:
        """The inverse of `to_dict`."""
        return cls(
            original_id=str(data["original_id"]),
            source_queue=str(data["source_queue"]),
            attempts=int(data["attempts"]),
            error=str(data["error"]),
            dead_lettered_at=float(data["dead_lettered_at"]),
        )


# OutgoingMessage and LeasedMessage are made once per message on the send and delivery paths, so
# they are not frozen: a frozen dataclass's __init__ costs about four times as much. Treat them
# as read-only all the same.


@dataclass(slots=True)
class OutgoingMessage:
    """A message on its way into a queue; `delay_seconds=None` means the queue's delivery delay."""

    queue: str
    id: str
    body: bytes
    content_type: ContentType
    delay_seconds: float | None = None
    dead_letter: DeadLetterInfo | None = None
    #: stored once per queue within its dedup window (see Backend.send_many)
    dedup_id: str | None = None
    #: string keys and values (checked by conveyor.headers); None when there are none
    headers: dict[str, str] | None = None
    #: ordered message group: delivered in send order, one at a time (docs/concepts/groups.md)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as it is stored; what `peek` returns."""

    id: str
    queue: str
    body: bytes
    content_type: ContentType
    timestamp: float  # send time, seconds since the epoch (UTC)
    attempts: int  # deliveries so far
    visible_at: float
    leased: bool
    dead_letter: DeadLetterInfo | None = None
    headers: dict[str, str] | None = None
    group: str | None = None


@dataclass(slots=True)
class LeasedMessage:
    """A message handed to one consumer; `lease_id` names this delivery and no other."""

    id: str
    queue: str
    body: bytes
    content_type: ContentType
    timestamp: float
    attempts: int  # 1 on first delivery
    lease_id: str
    dead_letter: DeadLetterInfo | None = None
    #: deliveries in a row that ended without an outcome (lease expired, worker gone): a
    #: message with lost > 0 is a suspect (docs/semantics.md)
    lost: int = 0
    headers: dict[str, str] | None = None
    #: its ordered message group, None when it has none
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    lease_id: str
    delay_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move the leased message to `dead_letter_queue` (or delete it when that is None) as
    `new_id`; `attempts` is its deliveries so far, kept in its dead-letter record."""

    lease_id: str
    new_id: str
    error: str
    dead_letter_queue: str | None
    attempts: int


@dataclass(slots=True)
class Settlement:
    """The outcomes of one batch, by lease id, as the consumer runtime and `Queue.ack` name them."""

    acks: list[str] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.acks or self.retries or self.dead_letters)


@dataclass(frozen=True, slots=True)
class SettleResult:
    """How many outcomes took effect; the rest named leases that had expired or were unknown."""

    acked: int
    retried: int
    dead_lettered: int
    stale: list[str] = field(default_factory=list)
    #: dead letters retried instead, their dead-letter queue missing (counted in `retried`)
    held: list[str] = field(default_factory=list)


# What the core hands an engine to settle (conveyor/core/settle.py builds it).

#: one parsed lease id: message id, token, row (0 for engines whose lease ids name no row)
Lease = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class DeadLetterMove:
    """A dead letter as an engine stores it: its lease, the copy's id and record, and the queue
    the copy goes to (None: the message is deleted)."""

    lease: Lease
    new_id: str
    queue: str | None
    record: DeadLetterInfo


@dataclass(slots=True)
class Outcomes:
    """One batch of outcomes, checked by the core: every lease well formed and named once, and
    every dead-letter queue known to exist. An engine applies them in one transaction and
    returns one status per item, in the order acks, retries, dead letters."""

    acks: list[Lease] = field(default_factory=list)
    #: (lease, delay in seconds)
    retries: list[tuple[Lease, float]] = field(default_factory=list)
    dead_letters: list[DeadLetterMove] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.acks) + len(self.retries) + len(self.dead_letters)
