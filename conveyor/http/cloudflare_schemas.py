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
import binascii
import datetime as dt
import hashlib
import re
from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from conveyor import limits as L
from conveyor.codec import check_content_type
from conveyor.http.envelope import INVALID_INPUT, ApiError
from conveyor.producer import PeekedMessage, PulledMessage, SendRequest
from conveyor.types import QueueInfo

# A queue_id as Cloudflare shows them: 32 lowercase hex digits.
QUEUE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
DEFAULT_PEEK_BATCH_SIZE = 1
MAX_PEEK_BATCH_SIZE = 100
CONTENT_TYPE_KEY = "CF-Content-Type"


def queue_id(name: str) -> str:
    """The stable id of queue `name`: the same for the same name, on every server and restart."""
    return hashlib.sha256(b"conveyor-queue:" + name.encode()).hexdigest()[:32]


class _Body(BaseModel):
    # lax and forgiving, as Cloudflare's API is: 10.0 is 10, unknown fields are ignored
    model_config = ConfigDict(extra="ignore", frozen=True)


class Settings(_Body):
    delivery_delay: float | None = None
    delivery_paused: bool | None = None
    message_retention_period: float | None = None


class CreateQueue(_Body):
    queue_name: str
    settings: Settings | None = None


class UpdateQueue(_Body):
    queue_name: str | None = None
    settings: Settings | None = None


class Message(_Body):
    body: Any
    content_type: str = "json"
    delay_seconds: float | None = None

    def to_request(self) -> SendRequest:
        """The message as conveyor sends it; bad content types and bodies are refused here."""
        content_type = check_content_type(self.content_type)
        body = self.body
        if content_type == "text" and not isinstance(body, str):
            raise ApiError(400, INVALID_INPUT, 'content_type "text" needs a string body')
        if content_type == "bytes":
            body = _base64_body(body)
        return SendRequest(body, self.delay_seconds, content_type)


class BulkPush(_Body):
    messages: list[Message]
    delay_seconds: float | None = None


class Pull(_Body):
    batch_size: int = Field(L.DEFAULT_PULL_BATCH_SIZE, ge=1, le=L.MAX_BATCH_SIZE)
    visibility_timeout_ms: int | None = Field(
        None, ge=int(L.MIN_VISIBILITY_TIMEOUT * 1000), le=int(L.MAX_VISIBILITY_TIMEOUT * 1000)
    )
    # the name Cloudflare's pull-consumer guide uses (milliseconds too)
    visibility_timeout: int | None = Field(
        None, ge=int(L.MIN_VISIBILITY_TIMEOUT * 1000), le=int(L.MAX_VISIBILITY_TIMEOUT * 1000)
    )

    def visibility_timeout_seconds(self) -> float:
        milliseconds = self.visibility_timeout_ms or self.visibility_timeout
        return L.DEFAULT_VISIBILITY_TIMEOUT if milliseconds is None else milliseconds / 1000


LeaseId = Annotated[str, Field(min_length=1, max_length=256)]


class Lease(_Body):
    lease_id: LeaseId


class RetryLease(_Body):
    lease_id: LeaseId
    delay_seconds: float = 0.0


class Ack(_Body):
    acks: list[Lease] = []
    retries: list[RetryLease] = []


class Peek(_Body):
    batch_size: int = Field(DEFAULT_PEEK_BATCH_SIZE, ge=1, le=MAX_PEEK_BATCH_SIZE)


class PurgeQueue(_Body):
    delete_messages_permanently: bool = False


class PurgeMessages(_Body):
    refs: list[Any] = []


def _base64_body(body: Any) -> bytes:
    if isinstance(body, str):
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error:
            pass
    raise ApiError(400, INVALID_INPUT, 'content_type "bytes" needs a base64 string body')


# -- documents ----------------------------------------------------------------------------------


def timestamp(unix: float) -> str:
    """Cloudflare's timestamps: ISO 8601 in UTC with microseconds and a Z."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def queue_document(info: QueueInfo) -> dict[str, Any]:
    created = timestamp(info.created_at)
    return {
        "queue_id": queue_id(info.name),
        "queue_name": info.name,
        "created_on": created,
        "modified_on": created,
        "producers": [],
        "producers_total_count": 0,
        "consumers": [],
        "consumers_total_count": 0,
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
    # the ref of Cloudflare's peek names one message for messages/purge (not supported here)
    return _message_document(message) | {"ref": message.id}
