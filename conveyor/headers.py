"""Message headers: checked once on the way in, stored as compact JSON text by every engine
(never pickle), and the headers a dead letter gets that name its record (docs/semantics.md,
"Headers").

A message without headers stores nothing (NULL, an absent field): sends without them cost
nothing more.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from conveyor.errors import InvalidHeaders, MessageTooLarge
from conveyor.limits import MAX_DEAD_LETTER_ERROR_HEADER_LENGTH, Limits
from conveyor.types import DeadLetterInfo

#: what `Message.headers` is for a message sent without headers
NO_HEADERS: Mapping[str, str] = MappingProxyType({})

# The headers a dead letter carries (and a replay keeps): its dead-letter record, so that a
# replayed message can be traced back to it.
DEAD_LETTER_PREFIX = "conveyor-dead-letter-"
ORIGINAL_ID = DEAD_LETTER_PREFIX + "original-id"
SOURCE_QUEUE = DEAD_LETTER_PREFIX + "source-queue"
ERROR = DEAD_LETTER_PREFIX + "error"
ATTEMPTS = DEAD_LETTER_PREFIX + "attempts"
DEAD_LETTERED_AT = DEAD_LETTER_PREFIX + "dead-lettered-at"


def check_headers(headers: object, limits: Limits) -> dict[str, str] | None:
    """`headers` as a dict (None when there are none), or InvalidHeaders: a mapping of at most
    `limits.max_headers` string keys (1 to `limits.max_header_key_length` characters) to
    string values. Nothing is sent when this raises."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise InvalidHeaders(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    if len(headers) > limits.max_headers:
        raise InvalidHeaders(
            f"{len(headers):,} headers; the limit is {limits.max_headers:,} (Limits.max_headers)"
        )
    checked: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not 1 <= len(key) <= limits.max_header_key_length:
            shown = repr(key) if not isinstance(key, str) or len(key) <= 80 else f"{key[:80]!r}..."
            raise InvalidHeaders(
                f"header key {shown} must be a str of 1 to {limits.max_header_key_length:,} characters"
                " (Limits.max_header_key_length)"
            )
        if not isinstance(value, str):
            raise InvalidHeaders(f"header {key!r} must have a str value, got {type(value).__name__}")
        checked[key] = value
    if not checked:
        return None
    try:
        dump_headers(checked)
    except UnicodeEncodeError:
        raise InvalidHeaders("headers hold a lone surrogate: keys and values must be valid UTF-8") from None
    return checked


def headers_size(headers: Mapping[str, str] | None) -> int:
    """Bytes the headers take beside the body (their JSON), what counts toward the message size."""
    text = dump_headers(headers)
    return 0 if text is None else len(text.encode())


def check_size(body: bytes, headers: Mapping[str, str] | None, limits: Limits) -> None:
    """MessageTooLarge when the body and the headers' JSON together pass `max_message_bytes`."""
    size = len(body) + headers_size(headers)
    if size > limits.max_message_bytes:
        raise MessageTooLarge(
            f"body and headers are {size:,} bytes; the limit is {limits.max_message_bytes:,}",
            limit="max_message_bytes",
            value=size,
            maximum=limits.max_message_bytes,
        )


def dump_headers(headers: Mapping[str, str] | None) -> str | None:
    """The stored form: compact JSON text, None for no headers. Raises UnicodeEncodeError for
    text that is not valid UTF-8 (check_headers turns it into InvalidHeaders)."""
    if not headers:
        return None
    text = json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False)
    text.encode()  # a lone surrogate cannot be stored by every engine
    return text


def load_headers(stored: str | bytes | Mapping[str, Any] | None) -> dict[str, str] | None:
    """Stored headers back as a dict (None for none); an engine may hand over a decoded JSON object."""
    if stored is None:
        return None
    data = stored if isinstance(stored, Mapping) else json.loads(stored)
    return {str(key): str(value) for key, value in data.items()} or None


def dead_letter_headers(record: DeadLetterInfo) -> dict[str, str]:
    """The headers naming a dead letter's record, added to (over) the message's own."""
    return {
        ORIGINAL_ID: record.original_id,
        SOURCE_QUEUE: record.source_queue,
        ERROR: record.error[:MAX_DEAD_LETTER_ERROR_HEADER_LENGTH],
        ATTEMPTS: str(record.attempts),
        DEAD_LETTERED_AT: dt.datetime.fromtimestamp(record.dead_lettered_at, dt.UTC).isoformat(),
    }


def with_dead_letter(stored: str | bytes | Mapping[str, Any] | None, record: DeadLetterInfo) -> str:
    """The stored headers of a dead letter's copy: the message's own, then its record's."""
    merged = load_headers(stored) or {}
    merged.update(dead_letter_headers(record))
    text = dump_headers(merged)
    assert text is not None  # the record's headers are never empty
    return text
