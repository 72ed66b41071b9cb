"""What travels over the wire into the API: request bodies (pydantic models). The documents it
answers with are conveyor.admin's, shared with `conveyor --json`.

Bodies are JSON values for content_type "json", strings for "text", and base64 strings for
"bytes", both ways.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from conveyor import limits as L
from conveyor.codec import check_content_type
from conveyor.producer import SendRequest
from conveyor.types import PullConsumer


def documented(**schema: Any) -> Any:
    """Describe a constraint in /openapi.json that conveyor, not pydantic, checks (so the answer
    keeps conveyor's own error code, and an App's own Limits apply)."""
    return Field(json_schema_extra=schema)


QueueName = Annotated[
    str, AfterValidator(L.validate_queue_name), documented(pattern=f"^{L.QUEUE_NAME_PATTERN.pattern}$")
]
# Delays and retention are checked by conveyor against the App's own Limits (limit_exceeded), so
# an App with other limits is served as it is configured; the document shows the default limits.
DelaySeconds = Annotated[float, documented(minimum=0, maximum=L.MAX_DELAY_SECONDS)]
RetentionSeconds = Annotated[
    float, documented(minimum=L.MIN_RETENTION_SECONDS, maximum=L.MAX_RETENTION_SECONDS)
]
DedupWindowSeconds = Annotated[float, documented(minimum=0, maximum=L.MAX_DEDUP_WINDOW_SECONDS)]
# checked by conveyor (invalid_dedup_id), like a queue name
DedupId = Annotated[str, documented(pattern=f"^{L.DEDUP_ID_PATTERN.pattern}$")]
# checked by conveyor (invalid_group_id)
GroupId = Annotated[str, documented(pattern=f"^{L.GROUP_ID_PATTERN.pattern}$")]
LeaseId = Annotated[str, Field(min_length=1, max_length=256)]
# checked by conveyor against the App's Limits (invalid_headers): string keys and values
Headers = Annotated[
    dict[str, Any],
    documented(
        additionalProperties={"type": "string"},
        maxProperties=L.MAX_HEADERS,
        propertyNames={"minLength": 1, "maxLength": L.MAX_HEADER_KEY_LENGTH},
    ),
]


def whole_number(value: object) -> object:
    """10.0 is 10 (JSON Schema calls it an integer, Cloudflare's SDK sends them); 10.5 and "10" are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Whole numbers within a range (the range before the validator, so /openapi.json shows it).
BatchSize = Annotated[int, Field(ge=1, le=L.MAX_BATCH_SIZE), BeforeValidator(whole_number)]
VisibilityTimeoutMs = Annotated[
    int,
    Field(ge=int(L.MIN_VISIBILITY_TIMEOUT * 1000), le=int(L.MAX_VISIBILITY_TIMEOUT * 1000)),
    BeforeValidator(whole_number),
]
# A long-poll pull's wait, in milliseconds (0: answer at once).
WaitMs = Annotated[int, Field(ge=0, le=int(L.MAX_PULL_WAIT_SECONDS * 1000)), BeforeValidator(whole_number)]
# A queue's backlog limit (None: no limit); in an update, 0 removes it.
BacklogLimit = Annotated[int, Field(ge=1, le=L.MAX_BACKLOG_LIMIT), BeforeValidator(whole_number)]
BacklogChange = Annotated[int, Field(ge=0, le=L.MAX_BACKLOG_LIMIT), BeforeValidator(whole_number)]
Partitions = Annotated[int, Field(ge=1, le=L.MAX_PARTITIONS), BeforeValidator(whole_number)]
ReplayLimit = Annotated[int, Field(ge=1, le=10_000_000), BeforeValidator(whole_number)]
ContentTypeName = Annotated[str, documented(enum=["json", "text", "bytes"])]
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _body_when(content_type: str, body: JsonDict) -> JsonDict:
    return {
        "if": {"properties": {"content_type": {"const": content_type}}, "required": ["content_type"]},
        "then": {"properties": {"body": body}},
    }


# A message's body must match its content type: text a string, bytes a base64 string.
BODY_MATCHES_CONTENT_TYPE: JsonDict = {
    "allOf": [
        _body_when("text", {"type": "string"}),
        _body_when("bytes", {"type": "string", "pattern": BASE64_PATTERN}),
    ]
}


class _Body(BaseModel):
    # strict: "10" is not a number; extra="forbid": a misspelt field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MessageFields(_Body):
    """What a send and a topic publish share."""

    model_config = ConfigDict(json_schema_extra=BODY_MATCHES_CONTENT_TYPE)

    body: Any
    # checked by conveyor, not here, so an unknown one ("v8") is `invalid_content_type`
    content_type: ContentTypeName = "json"
    delay_seconds: DelaySeconds | None = None
    #: string keys and values the handler reads as `message.headers`
    headers: Headers | None = None

    @model_validator(mode="after")
    def _body_matches_content_type(self) -> MessageFields:
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
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise ValueError('content_type "bytes" needs a base64 string body') from None

    def to_request(self, *, default_delay: float | None = None) -> SendRequest:
        content_type = check_content_type(self.content_type)
        body = self.decoded_bytes() if content_type == "bytes" else self.body
        delay = self.delay_seconds if self.delay_seconds is not None else default_delay
        return SendRequest(body, delay, content_type, self.dedup(), self.headers, self.message_group())

    def dedup(self) -> str | None:
        return None

    def message_group(self) -> str | None:
        return None


class SendMessage(MessageFields):
    #: a second send with this id within the queue's dedup window stores nothing and answers
    #: with the first message's id
    dedup_id: DedupId | None = None
    #: an ordered message group: its messages are delivered in send order, one at a time
    group: GroupId | None = None

    def dedup(self) -> str | None:
        return self.dedup_id

    def message_group(self) -> str | None:
        return self.group


class SendBatch(_Body):
    # checked by conveyor, which answers with its stable code, batch_count_too_large
    messages: Annotated[list[SendMessage], Field(min_length=1), documented(maxItems=L.MAX_BATCH_MESSAGES)]
    delay_seconds: DelaySeconds | None = None


class Pull(_Body):
    # None: the queue's pull consumer's, else 5 messages and 30,000 ms
    batch_size: BatchSize | None = None
    visibility_timeout_ms: VisibilityTimeoutMs | None = None
    wait_ms: WaitMs = 0

    def visibility_timeout(self) -> float | None:
        return None if self.visibility_timeout_ms is None else self.visibility_timeout_ms / 1000


class ExtendLease(_Body):
    lease_id: LeaseId
    visibility_timeout_ms: VisibilityTimeoutMs = int(L.DEFAULT_VISIBILITY_TIMEOUT * 1000)


class ExtendRequest(_Body):
    leases: Annotated[list[ExtendLease], Field(min_length=1), documented(maxItems=L.MAX_BATCH_SIZE)]


class Ack(_Body):
    lease_id: LeaseId


class RetryLease(_Body):
    lease_id: LeaseId
    # None: the queue's pull consumer's retry_delay, else none
    delay_seconds: DelaySeconds | None = None


class AckRequest(_Body):
    acks: list[Ack] = []
    retries: list[RetryLease] = []


class CreateQueue(_Body):
    name: QueueName
    delivery_delay: DelaySeconds = 0.0
    retention_seconds: RetentionSeconds = float(L.DEFAULT_RETENTION_SECONDS)
    dedup_window_seconds: DedupWindowSeconds = float(L.DEFAULT_DEDUP_WINDOW_SECONDS)
    max_backlog_messages: BacklogLimit | None = None
    max_backlog_bytes: BacklogLimit | None = None
    partitions: Partitions = L.DEFAULT_PARTITIONS


class UpdateQueue(_Body):
    delivery_delay: DelaySeconds | None = None
    retention_seconds: RetentionSeconds | None = None
    dedup_window_seconds: DedupWindowSeconds | None = None
    # 0 removes the limit
    max_backlog_messages: BacklogChange | None = None
    max_backlog_bytes: BacklogChange | None = None
    # fixed at creation: another count than the queue's is partition_count_fixed
    partitions: Partitions | None = None


class Replay(_Body):
    to: QueueName
    limit: ReplayLimit | None = None


# A topic request's bounds: the largest one stays far below the request body limit.
MAX_TYPE_CHARS = 100
MAX_TYPES_PER_SUBSCRIPTION = 50
MAX_SUBSCRIPTIONS_PER_REQUEST = 50

# A message type in a subscription's filter: a non-empty string ("*": every type).
MessageType = Annotated[str, Field(min_length=1, max_length=MAX_TYPE_CHARS)]


class Subscribe(_Body):
    queue: QueueName
    # None (or ["*"]): every type, messages without one included
    types: Annotated[list[MessageType], Field(min_length=1, max_length=MAX_TYPES_PER_SUBSCRIPTION)] | None = (
        None
    )


class CreateTopic(_Body):
    name: QueueName
    subscriptions: Annotated[list[Subscribe], Field(min_length=1, max_length=MAX_SUBSCRIPTIONS_PER_REQUEST)]


class Publish(MessageFields):
    """A message published to a topic: the same fields as a send but `dedup_id` (a topic's
    copies carry none)."""


MaxRetries = Annotated[int, Field(ge=0, le=L.MAX_RETRIES), BeforeValidator(whole_number)]


class HttpConsumer(_Body):
    """A queue's HTTP pull consumer (`PUT /queues/{name}/consumers/http`): every setting, a
    missing one taking its default."""

    batch_size: BatchSize = L.DEFAULT_PULL_BATCH_SIZE
    max_retries: MaxRetries = L.DEFAULT_MAX_RETRIES
    retry_delay: DelaySeconds = L.DEFAULT_RETRY_DELAY
    visibility_timeout_ms: VisibilityTimeoutMs = int(L.DEFAULT_VISIBILITY_TIMEOUT * 1000)
    # checked by the App (invalid_queue_name), as a queue name in a path is
    dead_letter_queue: Annotated[str, documented(pattern=f"^{L.QUEUE_NAME_PATTERN.pattern}$")] | None = None

    def to_consumer(self) -> PullConsumer:
        return PullConsumer(
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
            visibility_timeout=self.visibility_timeout_ms / 1000,
            dead_letter_queue=self.dead_letter_queue,
        )
