"""Error codes on the Cloudflare mount: the numbers Cloudflare documents for Queues' REST API
(developers.cloudflare.com/queues/reference/error-codes/, and 10000 for a bad token as on every
Cloudflare API), mapped from conveyor's own codes. Where Cloudflare documents none, conveyor
uses a number of its own from 10290 up (listed in docs/http.md)."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.errors import ConveyorError, LimitExceeded

AUTHENTICATION_ERROR = 10000
NO_ROUTE = 7003
METHOD_NOT_ALLOWED = 7001
QUEUE_NOT_FOUND = 10104
UNAUTHORIZED_REQUEST = 10106
QUEUE_ID_MALFORMED = 10107
CLIENT_DISCONNECTED = 10201
BATCH_DELAY_INVALID = 10202
MESSAGE_METADATA_INVALID = 10203  # content type or delay
MESSAGE_SIZE_OUT_OF_BOUNDS = 10204
BATCH_SIZE_OUT_OF_BOUNDS = 10205
BATCH_COUNT_OUT_OF_BOUNDS = 10206
JSON_BODY_INVALID = 10207  # valid JSON, not the expected schema
JSON_BODY_MALFORMED = 10208  # not JSON at all
QUEUE_OVERLOADED = 10250
QUEUE_STORAGE_LIMIT_EXCEEDED = 10251  # a queue past its backlog limit
QUEUE_DISABLED = 10252  # delivery paused
UNKNOWN_INTERNAL_ERROR = 15000
# conveyor's own, where Cloudflare documents no code
REQUEST_TIMEOUT = 10290
QUEUE_ALREADY_EXISTS = 10291
CONSUMER_NOT_FOUND = 10292

# conveyor's code (ConveyorError.code or the HTTP layer's) -> Cloudflare's number
BY_CODE: Mapping[str, int] = {
    "unauthorized": AUTHENTICATION_ERROR,
    "host_not_allowed": UNAUTHORIZED_REQUEST,
    "token_in_url": UNAUTHORIZED_REQUEST,
    "cross_origin": UNAUTHORIZED_REQUEST,
    "not_found": NO_ROUTE,
    "method_not_allowed": METHOD_NOT_ALLOWED,
    "queue_not_found": QUEUE_NOT_FOUND,
    "invalid_queue_id": QUEUE_ID_MALFORMED,
    "client_disconnected": CLIENT_DISCONNECTED,
    "invalid_content_type": MESSAGE_METADATA_INVALID,
    "message_too_large": MESSAGE_SIZE_OUT_OF_BOUNDS,
    "batch_too_large": BATCH_SIZE_OUT_OF_BOUNDS,
    "request_too_large": BATCH_SIZE_OUT_OF_BOUNDS,
    "batch_count_too_large": BATCH_COUNT_OUT_OF_BOUNDS,
    "invalid_input": JSON_BODY_INVALID,
    "invalid_json": JSON_BODY_MALFORMED,
    "invalid_value": JSON_BODY_INVALID,
    "invalid_queue_name": JSON_BODY_INVALID,
    "limit_exceeded": JSON_BODY_INVALID,
    "body_not_serializable": JSON_BODY_INVALID,
    "message_validation_failed": JSON_BODY_INVALID,
    "overloaded": QUEUE_OVERLOADED,
    "queue_full": QUEUE_STORAGE_LIMIT_EXCEEDED,
    "queue_paused": QUEUE_DISABLED,
    "request_timeout": REQUEST_TIMEOUT,
    "queue_already_exists": QUEUE_ALREADY_EXISTS,
    "consumer_not_found": CONSUMER_NOT_FOUND,
}


def cloudflare_code(code: str) -> int:
    return BY_CODE.get(code, UNKNOWN_INTERNAL_ERROR)


def cloudflare_code_of(exc: ConveyorError) -> int:
    """A conveyor error's number; a delay out of range is invalid message metadata, as Cloudflare says."""
    if isinstance(exc, LimitExceeded) and exc.code == LimitExceeded.code and "delay" in exc.limit:
        return MESSAGE_METADATA_INVALID
    return cloudflare_code(exc.code)
