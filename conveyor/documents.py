"""JSON documents shared by `conveyor --json` and the HTTP API, so both show a queue the same way."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conveyor.types import QueueInfo, QueueStats


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
        "created_at": iso(info.created_at),
    }
