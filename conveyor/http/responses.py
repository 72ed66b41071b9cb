"""The shapes of the API's answers, for /openapi.json: the `result` of each successful envelope,
and the envelopes themselves. Handlers build plain dicts (fast); the schemathesis run in the test
suite checks every answer against these."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from conveyor.types import ContentType

T = TypeVar("T")


class _Document(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class Envelope(_Document, Generic[T]):
    """A successful answer."""

    success: Literal[True]
    result: T
    errors: list[Any] = Field(max_length=0)
    messages: list[str]


class ErrorItem(_Document):
    code: str = Field(description="stable: branch on it, never on the message")
    message: str


class ErrorEnvelope(_Document):
    """A failed answer of the native API."""

    success: Literal[False]
    result: None
    errors: list[ErrorItem] = Field(min_length=1)
    messages: list[str]


class CloudflareErrorItem(_Document):
    code: int = Field(description="Cloudflare's number for the error")
    message: str


class CloudflareErrorEnvelope(_Document):
    """A failed answer of the Cloudflare mount."""

    success: Literal[False]
    result: None
    errors: list[CloudflareErrorItem] = Field(min_length=1)
    messages: list[str]


# -- the native API's results --------------------------------------------------------------------


class Health(_Document):
    status: Literal["ok"]


class WorkerDocument(_Document):
    id: str = Field(description="unique per worker run: host, pid and a random part")
    host: str
    pid: int
    queues: list[str] = Field(description="the queues its consumers consume")
    concurrency: int = Field(description="batches it may run at once, all consumers together")
    started_at: str
    last_heartbeat: str
    last_heartbeat_seconds_ago: float


class PullConsumerDocument(_Document):
    batch_size: int = Field(description="messages a pull that names no batch_size gets")
    max_retries: int = Field(description="retries before a pulled message goes to the dead-letter queue")
    retry_delay: float = Field(description="seconds a retry that names no delay waits")
    visibility_timeout_ms: int = Field(description="the lease of a pull that names none")
    dead_letter_queue: str | None = Field(description="null: a message past max_retries is deleted")


class PullConsumerDeleted(_Document):
    name: str
    deleted: Literal[True]


class QueueDocument(_Document):
    name: str
    backlog: int = Field(description="messages ready for delivery now")
    delayed: int = Field(description="messages not visible yet")
    in_flight: int = Field(description="messages leased to a consumer")
    oldest_age_seconds: float
    bytes: int
    paused: bool
    delivery_delay: float
    retention_seconds: float
    dedup_window_seconds: float
    max_backlog_messages: int | None = Field(description="the most messages it may hold; null: no limit")
    max_backlog_bytes: int | None = Field(description="the most bytes of bodies it may hold; null: no limit")
    pull_consumer: PullConsumerDocument | None = Field(description="its HTTP pull consumer; null: none")
    partitions: int = Field(description="how many partitions it spreads over, fixed at creation")
    created_at: str


class Deleted(_Document):
    name: str
    deleted: Literal[True]


class Purged(_Document):
    name: str
    purged: int


class MessageDeleted(_Document):
    queue: str
    id: str
    deleted: bool


class DeadLetter(_Document):
    original_id: str
    source_queue: str
    attempts: int
    error: str
    dead_lettered_at: float


class _Message(_Document):
    id: str
    body: Any = Field(description="a JSON value (json), a string (text) or base64 (bytes)")
    timestamp_ms: int
    attempts: int
    content_type: ContentType
    dead_letter: DeadLetter | None
    headers: dict[str, str] = Field(description="the message's headers ({} when none)")
    group: str | None = Field(description="its ordered message group, null when it has none")


class PulledMessage(_Message):
    lease_id: str


class PeekedMessage(_Message):
    leased: bool


class Sent(_Document):
    id: str


class SentBatch(_Document):
    ids: list[str]


class Pulled(_Document):
    message_backlog_count: int = Field(description="unacknowledged messages, read in the background")
    messages: list[PulledMessage]


class Acked(_Document):
    ack_count: int
    retry_count: int = Field(description="retries that took effect, dead_letter_count included")
    dead_letter_count: int = Field(description="retries past the pull consumer's max_retries: dead-lettered")
    warnings: list[str]


class Extended(_Document):
    extended_count: int
    warnings: list[str]


class SubscriptionDocument(_Document):
    topic: str
    queue: str
    types: list[str] | None = Field(description="the message types copied; null: every type")
    created_at: str


class TopicDocument(_Document):
    name: str
    subscriptions: list[SubscriptionDocument]


class TopicDeleted(_Document):
    name: str
    deleted: Literal[True]
    subscriptions: int = Field(description="subscriptions removed (the queues stay)")


class Unsubscribed(_Document):
    topic: str
    queue: str
    unsubscribed: Literal[True]


class Published(_Document):
    topic: str
    type: str | None = Field(description="the message's type, which subscriptions match on")
    ids: dict[str, str] = Field(description="the id of the copy in each subscription queue")


class Replayed(_Document):
    from_: str = Field(alias="from")
    to: str
    replayed: int


# -- the Cloudflare mount's results --------------------------------------------------------------


class CloudflareSettings(_Document):
    delivery_delay: float
    delivery_paused: bool
    message_retention_period: float


class CloudflareConsumerSettings(_Document):
    batch_size: int
    max_retries: int
    retry_delay: float
    visibility_timeout_ms: int


class CloudflareConsumer(_Document):
    consumer_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    queue_name: str
    type: Literal["http_pull"]
    created_on: str
    dead_letter_queue: str = Field(description="empty: none")
    settings: CloudflareConsumerSettings


class CloudflareQueue(_Document):
    queue_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    queue_name: str
    created_on: str
    modified_on: str
    producers: list[Any]
    producers_total_count: int
    consumers: list[CloudflareConsumer]
    consumers_total_count: int
    settings: CloudflareSettings


class CloudflareMetrics(_Document):
    backlog_count: int
    backlog_bytes: int
    oldest_message_timestamp_ms: int


class CloudflareMetadata(_Document):
    metrics: CloudflareMetrics


class CloudflarePushed(_Document):
    metadata: CloudflareMetadata


class CloudflareMessageMetadata(_Document):
    content_type: Literal["json", "text", "bytes"] = Field(alias="CF-Content-Type")


class _CloudflareMessage(_Document):
    id: str
    body: str = Field(description="text as is; json and bytes as base64")
    timestamp_ms: int
    attempts: int
    metadata: CloudflareMessageMetadata


class CloudflarePulledMessage(_CloudflareMessage):
    lease_id: str


class CloudflarePeekedMessage(_CloudflareMessage):
    ref: str


class CloudflarePulled(_Document):
    message_backlog_count: int
    messages: list[CloudflarePulledMessage]
    metadata: CloudflareMetadata


class CloudflareAcked(_Document):
    ack_count: int = Field(alias="ackCount")
    retry_count: int = Field(alias="retryCount")
    warnings: dict[str, str]


class CloudflarePeeked(_Document):
    messages: list[CloudflarePeekedMessage]


class CloudflarePurgeStatus(_Document):
    started_at: str | None
    completed: Literal["true"] | None
