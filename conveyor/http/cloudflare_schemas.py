"""What travels over the Cloudflare mount: request bodies as Cloudflare's REST API takes them, and
the documents it answers with (queue objects, pulled and peeked messages).

Unlike the native API, these bodies are lenient as Cloudflare's are: unknown fields are ignored
(`{"visibility_timeout": 10000, "batch_size": 2}` from Cloudflare's own docs works) and whole
numbers may come as floats (the official SDK sends `batch_size` as `10.0`).

Pulled and peeked bodies are encoded as Cloudflare encodes them for HTTP consumers: `text` as
the string itself, `json` and `bytes` as base64 of their bytes; `metadata["CF-Content-Type"]`
names the type.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from conveyor import limits as L
from conveyor.codec import check_content_type
from conveyor.http.envelope import INVALID_INPUT, ApiError
from conveyor.http.schemas import (
    BODY_MATCHES_CONTENT_TYPE,
    BatchSize,
    ContentTypeName,
    DelaySeconds,
    LeaseId,
    MaxRetries,
    QueueName,
    RetentionSeconds,
    VisibilityTimeoutMs,
    WaitMs,
    documented,
    whole_number,
)
from conveyor.producer import PeekedMessage, PulledMessage, SendRequest
from conveyor.types import PullConsumer, QueueInfo

# A queue_id as Cloudflare shows them: 32 lowercase hex digits.
QUEUE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
DEFAULT_PEEK_BATCH_SIZE = 1
MAX_PEEK_BATCH_SIZE = 100
CONTENT_TYPE_KEY = "CF-Content-Type"


def queue_id(name: str) -> str:
    """The stable id of queue `name`: the same for the same name, on every server and restart."""
    return hashlib.sha256(b"conveyor-queue:" + name.encode()).hexdigest()[:32]


class _Body(BaseModel):
    # forgiving, as Cloudflare's API is: unknown fields are ignored; otherwise as strict as the
    # native API: "10" is not a number, "true" not a bool (but 10.0 is 10)
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class SettingsParams(_Body):
    delivery_delay: DelaySeconds | None = None
    delivery_paused: bool | None = None
    message_retention_period: RetentionSeconds | None = None


class QueueCreateParams(_Body):
    queue_name: QueueName
    settings: SettingsParams | None = None


class QueueUpdateParams(_Body):
    queue_name: str | None = None
    settings: SettingsParams | None = None


class MessagePushParams(_Body):
    model_config = ConfigDict(json_schema_extra=BODY_MATCHES_CONTENT_TYPE)

    body: Any
    content_type: ContentTypeName = "json"
    delay_seconds: DelaySeconds | None = None

    def to_request(self) -> SendRequest:
        """The message as conveyor sends it; bad content types and bodies are refused here."""
        content_type = check_content_type(self.content_type)
        body = self.body
        if content_type == "text" and not isinstance(body, str):
            raise ApiError(400, INVALID_INPUT, 'content_type "text" needs a string body')
        if content_type == "bytes":
            body = _base64_body(body)
        return SendRequest(body, self.delay_seconds, content_type)


class MessageBulkPushParams(_Body):
    messages: Annotated[list[MessagePushParams], documented(maxItems=L.MAX_BATCH_MESSAGES)]
    delay_seconds: DelaySeconds | None = None


PeekBatchSize = Annotated[int, Field(ge=1, le=MAX_PEEK_BATCH_SIZE), BeforeValidator(whole_number)]


class MessagePullParams(_Body):
    # None: the queue's pull consumer's, else 5 (and 30 s for the visibility timeout)
    batch_size: BatchSize | None = None
    visibility_timeout_ms: VisibilityTimeoutMs | None = None
    # the name Cloudflare's pull-consumer guide uses (milliseconds too)
    visibility_timeout: VisibilityTimeoutMs | None = None
    # conveyor's long poll (Cloudflare answers at once): wait up to this long for a message
    wait_ms: WaitMs = 0

    def visibility_timeout_seconds(self) -> float | None:
        milliseconds = self.visibility_timeout_ms or self.visibility_timeout
        return None if milliseconds is None else milliseconds / 1000


class AckParams(_Body):
    lease_id: LeaseId


class RetryParams(_Body):
    lease_id: LeaseId
    # None: the queue's pull consumer's retry_delay, else none
    delay_seconds: DelaySeconds | None = None


class MessageAckParams(_Body):
    acks: list[AckParams] = []
    retries: list[RetryParams] = []


class ConsumerSettingsParams(_Body):
    """An HTTP pull consumer's settings as Cloudflare takes them (a Worker consumer's other
    fields, such as max_concurrency, are ignored); one left out takes its default."""

    batch_size: BatchSize | None = None
    max_retries: MaxRetries | None = None
    retry_delay: DelaySeconds | None = None
    visibility_timeout_ms: VisibilityTimeoutMs | None = None


class ConsumerParams(_Body):
    """`POST .../consumers` and `PUT .../consumers/{consumer_id}`: conveyor has HTTP pull
    consumers only (`type: "http_pull"`); a Worker consumer is `conveyor worker`."""

    type: str
    dead_letter_queue: str | None = None
    settings: ConsumerSettingsParams | None = None

    def to_consumer(self) -> PullConsumer:
        if self.type != "http_pull":
            raise ApiError(
                400,
                INVALID_INPUT,
                f'type: conveyor serves HTTP pull consumers only ("http_pull"), got {self.type[:40]!r}; '
                "run a Worker-style consumer with `conveyor worker`",
            )
        settings = self.settings or ConsumerSettingsParams()
        visibility_ms = settings.visibility_timeout_ms
        return PullConsumer(
            batch_size=L.DEFAULT_PULL_BATCH_SIZE if settings.batch_size is None else settings.batch_size,
            max_retries=L.DEFAULT_MAX_RETRIES if settings.max_retries is None else settings.max_retries,
            retry_delay=L.DEFAULT_RETRY_DELAY if settings.retry_delay is None else settings.retry_delay,
            visibility_timeout=L.DEFAULT_VISIBILITY_TIMEOUT
            if visibility_ms is None
            else visibility_ms / 1000,
            # Cloudflare shows "" for none
            dead_letter_queue=self.dead_letter_queue or None,
        )


class MessagePeekParams(_Body):
    batch_size: PeekBatchSize = DEFAULT_PEEK_BATCH_SIZE


class PurgeStartParams(_Body):
    # must be there and true: a purge without it is refused
    delete_messages_permanently: Annotated[bool, documented(const=True)]


def _base64_body(body: Any) -> bytes:
    if isinstance(body, str):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            pass
    raise ApiError(400, INVALID_INPUT, 'content_type "bytes" needs a base64 string body')


# -- documents ----------------------------------------------------------------------------------


def timestamp(unix: float) -> str:
    """Cloudflare's timestamps: ISO 8601 in UTC with microseconds and a Z."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def consumer_id(name: str) -> str:
    """The stable id of queue `name`'s HTTP pull consumer (a queue has at most one)."""
    return hashlib.sha256(b"conveyor-consumer:" + name.encode()).hexdigest()[:32]


def consumer_document(info: QueueInfo) -> dict[str, Any] | None:
    """The queue's HTTP pull consumer as Cloudflare shows one (None: it has none); its
    created_on is the queue's (conveyor keeps no time of its own for it)."""
    consumer = info.settings.pull_consumer
    if consumer is None:
        return None
    return {
        "consumer_id": consumer_id(info.name),
        "queue_name": info.name,
        "type": "http_pull",
        "created_on": timestamp(info.created_at),
        "dead_letter_queue": consumer.dead_letter_queue or "",
        "settings": {
            "batch_size": consumer.batch_size,
            "max_retries": consumer.max_retries,
            "retry_delay": consumer.retry_delay,
            "visibility_timeout_ms": round(consumer.visibility_timeout * 1000),
        },
    }


def queue_document(info: QueueInfo) -> dict[str, Any]:
    created = timestamp(info.created_at)
    consumer = consumer_document(info)
    consumers = [] if consumer is None else [consumer]
    return {
        "queue_id": queue_id(info.name),
        "queue_name": info.name,
        "created_on": created,
        "modified_on": created,
        "producers": [],
        "producers_total_count": 0,
        "consumers": consumers,
        "consumers_total_count": len(consumers),
        "settings": {
            "delivery_delay": info.settings.delivery_delay,
            "delivery_paused": info.paused,
            "message_retention_period": info.settings.retention_seconds,
        },
    }


def _wire_body(message: PulledMessage | PeekedMessage) -> tuple[str, str]:
    body = message.body
    if isinstance(body, bytes):
        # bytes, or a body a foreign writer stored that does not parse as its type
        return base64.b64encode(body).decode(), "bytes"
    if message.content_type == "text":
        return body, "text"
    return base64.b64encode(pydantic_core.to_json(body, inf_nan_mode="null")).decode(), "json"


def _message_document(message: PulledMessage | PeekedMessage) -> dict[str, Any]:
    body, content_type = _wire_body(message)
    return {
        "id": message.id,
        "body": body,
        "timestamp_ms": int(message.timestamp.timestamp() * 1000),
        "attempts": message.attempts,
        "metadata": {CONTENT_TYPE_KEY: content_type},
    }


def pulled_document(message: PulledMessage) -> dict[str, Any]:
    return _message_document(message) | {"lease_id": message.lease_id}


def peeked_document(message: PeekedMessage) -> dict[str, Any]:
    # the ref of Cloudflare's peek names one message for messages/purge (not mounted here)
    return _message_document(message) | {"ref": message.id}
