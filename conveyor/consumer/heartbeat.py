"""A worker's heartbeat: every few seconds it writes who it is (host, pid, queues, concurrency)
through the engine, so that `conveyor workers`, `GET /workers` and the dashboard can list the
workers seen recently; a worker that stops gracefully deletes its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

from conveyor import limits as L
from conveyor.consumer.spec import ConsumerSpec
from conveyor.core import Core
from conveyor.types import WorkerInfo

log = logging.getLogger("conveyor.worker")


def describe(specs: Sequence[ConsumerSpec], started_at: float) -> WorkerInfo:
    """This process as a worker running `specs`, seen now."""
    host, pid = socket.gethostname(), os.getpid()
    concurrency = sum(
        L.AUTOSCALE_MAX_CONCURRENCY if spec.max_concurrency is None else spec.max_concurrency
        for spec in specs
    )
    return WorkerInfo(
        id=f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
        host=host,
        pid=pid,
        queues=tuple(sorted({spec.queue for spec in specs})),
        concurrency=concurrency,
        started_at=started_at,
        seen_at=started_at,
    )


class Heartbeat:
    """Writes `worker`'s heartbeat every WORKER_HEARTBEAT_SECONDS until `stopping` is set, then
    deletes it. A failed write is logged (once until one succeeds again) and tried at the next beat:
    the heartbeat never stops a worker."""

    def __init__(self, core: Core, worker: WorkerInfo) -> None:
        self.core = core
        self.worker = worker
        self._failing = False

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                await self.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), L.WORKER_HEARTBEAT_SECONDS)
        finally:
            with contextlib.suppress(Exception):  # the heartbeat ages out anyway
                async with asyncio.timeout(L.WORKER_HEARTBEAT_SECONDS):
                    await self.core.backend.forget_worker(self.worker.id)

    async def beat(self) -> None:
        seen = dataclasses.replace(self.worker, seen_at=time.time())
        try:
            # bounded: an engine retrying a lost connection must not hold a stopping worker
            async with asyncio.timeout(L.WORKER_HEARTBEAT_SECONDS):
                await self.core.backend.record_worker(seen, L.WORKER_HEARTBEAT_TTL_SECONDS)
        except Exception as exc:
            if not self._failing:
                log.warning("heartbeat of worker %s failed: %s: %s", self.worker.id, type(exc).__name__, exc)
            self._failing = True
            return
        self._failing = False
