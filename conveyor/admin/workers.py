"""The workers seen recently: their last heartbeats (conveyor/consumer/heartbeat.py), for
`conveyor workers`, `GET /workers` and the dashboard."""

from __future__ import annotations

import time
from typing import Any

from conveyor import limits as L
from conveyor.admin.documents import iso
from conveyor.app import App
from conveyor.types import WorkerInfo


async def recent_workers(app: App, within: float = L.WORKERS_SEEN_SECONDS) -> list[WorkerInfo]:
    """The workers whose last heartbeat is at most `within` seconds old, by id."""
    await app.connect()
    return await app.backend.list_workers(time.time() - within)


def worker_document(worker: WorkerInfo, now: float | None = None) -> dict[str, Any]:
    """A worker as `--json` and the API show it."""
    now = time.time() if now is None else now
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "started_at": iso(worker.started_at),
        "last_heartbeat": iso(worker.seen_at),
        "last_heartbeat_seconds_ago": round(max(0.0, now - worker.seen_at), 3),
    }
