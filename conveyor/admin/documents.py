"""The JSON documents of a queue and of a message: what the HTTP API answers and what
`conveyor --json` prints, key for key.

Bodies travel as JSON can carry them: JSON as itself, text as a string, bytes as base64 (with
content_type "bytes", also for a body a foreign writer stored that does not parse as its type).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from conveyor.producer import PeekedMessage, PulledMessage
from conveyor.types import ContentType, PullConsumer, QueueInfo, QueueStats


def iso(timestamp: float) -> str:
    """A Unix timestamp as ISO 8601 in UTC."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def queue_document(info: QueueInfo, stats: QueueStats) -> dict[str, Any]:
    """A queue with its settings and counts."""
    return {
        "name": info.name,
        "backlog": stats.backlog,
        "delayed": stats.delayed,
        "in_flight": stats.in_flight,
        "oldest_age_seconds": stats.oldest_age_seconds,
        "bytes": stats.bytes,
        "paused": stats.paused,
        "delivery_delay": info.settings.delivery_delay,
        "retention_seconds": info.settings.retention_seconds,
        "dedup_window_seconds": info.settings.dedup_window_seconds,
        "max_backlog_messages": info.settings.max_backlog_messages,
        "max_backlog_bytes": info.settings.max_backlog_bytes,
        "pull_consumer": pull_consumer_document(info.settings.pull_consumer),
        "partitions": info.settings.partitions,
        "created_at": iso(info.created_at),
    }


def pull_consumer_document(consumer: PullConsumer | None) -> dict[str, Any] | None:
    """A queue's HTTP pull consumer settings as the API shows them (None: none configured)."""
    if consumer is None:
        return None
    return {
        "batch_size": consumer.batch_size,
        "max_retries": consumer.max_retries,
        "retry_delay": consumer.retry_delay,
        "visibility_timeout_ms": round(consumer.visibility_timeout * 1000),
        "dead_letter_queue": consumer.dead_letter_queue,
    }


def wire_body(body: Any, content_type: ContentType) -> tuple[Any, ContentType]:
    """A decoded body and its content type as JSON carries them."""
    if isinstance(body, bytes):
        return base64.b64encode(body).decode(), "bytes"
    return body, content_type


def message_document(message: PeekedMessage | PulledMessage) -> dict[str, Any]:
    """A message: a peeked one says whether it is `leased`, a pulled one carries its `lease_id`."""
    body, content_type = wire_body(message.body, message.content_type)
    document = {
        "id": message.id,
        "body": body,
        "timestamp_ms": int(message.timestamp.timestamp() * 1000),
        "attempts": message.attempts,
        "content_type": content_type,
        "dead_letter": None if message.dead_letter is None else message.dead_letter.to_dict(),
        "headers": dict(message.headers),
        "group": message.group,
    }
    if isinstance(message, PulledMessage):
        document["lease_id"] = message.lease_id
    else:
        document["leased"] = message.leased
    return document
