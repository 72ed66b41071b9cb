"""What travels over the wire: request bodies (pydantic models) and response documents.

Bodies are JSON values for content_type "json", strings for "text", and base64 strings for
"bytes", both ways.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from conveyor import limits as L
from conveyor.codec import check_content_type
from conveyor.producer import PeekedMessage, PulledMessage, SendRequest
from conveyor.types import ContentType

QueueName = Annotated[str, AfterValidator(L.validate_queue_name)]
# Delays and retention are checked by conveyor against the App's own Limits (limit_exceeded), so
# an App with other limits is served as it is configured.
Seconds = float
LeaseId = Annotated[str, Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    # strict: "10" is not a number; extra="forbid": a misspelt field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SendMessage(_Body):
    body: Any
    # checked by conveyor, not here, so an unknown one ("v8") is `invalid_content_type`
    content_type: str = "json"
    delay_seconds: Seconds | None = None

    @model_validator(mode="after")
    def _body_matches_content_type(self) -> SendMessage:
        if self.content_type == "text" and not isinstance(self.body, str):
            raise ValueError('content_type "text" needs a string body')
        if self.content_type == "bytes":
            self.decoded_bytes()
        return self

    def decoded_bytes(self) -> bytes:
        if not isinstance(self.body, str):
            raise ValueError('content_type "bytes" needs a base64 string body')
        try:
            return base64.b64decode(self.body, validate=True)
        except binascii.Error:
            raise ValueError('content_type "bytes" needs a base64 string body') from None

    def to_request(self, *, default_delay: float | None = None) -> SendRequest:
        content_type = check_content_type(self.content_type)
        body = self.decoded_bytes() if content_type == "bytes" else self.body
        delay = self.delay_seconds if self.delay_seconds is not None else default_delay
        return SendRequest(body, delay, content_type)


class SendBatch(_Body):
    # no max_length: conveyor's own check answers with its stable code, batch_count_too_large
    messages: list[SendMessage] = Field(min_length=1)
    delay_seconds: Seconds | None = None


class Pull(_Body):
    batch_size: int = Field(L.DEFAULT_PULL_BATCH_SIZE, ge=1, le=L.MAX_BATCH_SIZE)
    visibility_timeout_ms: int = Field(
        int(L.DEFAULT_VISIBILITY_TIMEOUT * 1000),
        ge=int(L.MIN_VISIBILITY_TIMEOUT * 1000),
        le=int(L.MAX_VISIBILITY_TIMEOUT * 1000),
    )


class Ack(_Body):
    lease_id: LeaseId


class RetryLease(_Body):
    lease_id: LeaseId
    delay_seconds: Seconds = 0.0


class AckRequest(_Body):
    acks: list[Ack] = []
    retries: list[RetryLease] = []


class CreateQueue(_Body):
    name: QueueName
    delivery_delay: Seconds = 0.0
    retention_seconds: Seconds = float(L.DEFAULT_RETENTION_SECONDS)


class UpdateQueue(_Body):
    delivery_delay: Seconds | None = None
    retention_seconds: Seconds | None = None


class Replay(_Body):
    to: QueueName
    limit: int | None = Field(None, ge=1, le=10_000_000)


# -- responses ----------------------------------------------------------------------------------


def _wire_body(body: Any, content_type: ContentType) -> tuple[Any, ContentType]:
    if isinstance(body, bytes):
        # bytes, or a body a foreign writer stored that does not parse as its type: base64 either way
        return base64.b64encode(body).decode(), "bytes"
    return body, content_type


def _message_document(message: PulledMessage | PeekedMessage) -> dict[str, Any]:
    """The keys a pulled and a peeked message share."""
    body, content_type = _wire_body(message.body, message.content_type)
    return {
        "id": message.id,
        "body": body,
        "timestamp_ms": int(message.timestamp.timestamp() * 1000),
        "attempts": message.attempts,
        "content_type": content_type,
        "dead_letter": None if message.dead_letter is None else message.dead_letter.to_dict(),
    }


def pulled_document(message: PulledMessage) -> dict[str, Any]:
    return _message_document(message) | {"lease_id": message.lease_id}


def peeked_document(message: PeekedMessage) -> dict[str, Any]:
    return _message_document(message) | {"leased": message.leased}
