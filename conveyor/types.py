"""Small shared dataclasses passed between the core and the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ContentType = Literal["json", "text", "bytes"]
CONTENT_TYPES: tuple[ContentType, ...] = ("json", "text", "bytes")


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's stored settings."""

    delivery_delay: float = 0.0
    retention_seconds: float = 345_600.0


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


@dataclass(frozen=True, slots=True)
class Retry:
    lease_id: str
    delay_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move the leased message to `dead_letter_queue` (or delete it when that is None)."""

    lease_id: str
    new_id: str
    error: str
    dead_letter_queue: str | None


@dataclass(slots=True)
class Settlement:
    """The outcome of one batch, written by the engine in one transaction."""

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
