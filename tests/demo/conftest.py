"""The pipeline in one process: the service over an ASGI transport, the worker run by `drain`.

The queue and the store are separate SQLite files, as in the demo.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import conveyor
from conveyor.background import BackgroundSender
from conveyor.demo.consumer import DEAD_LETTER_QUEUE, QUEUE, build_worker
from conveyor.demo.models import QueueMessage
from conveyor.demo.seed import seed
from conveyor.demo.service import Deps, create_service
from conveyor.demo.store import Store, open_store
from conveyor.testing import drain


@dataclass
class Pipeline:
    client: httpx.AsyncClient
    app: conveyor.App  # the service's producer side
    worker: conveyor.App  # the consumer side, on the same queue file
    store: Store
    sender: BackgroundSender
    deps: Deps

    async def settle(self) -> int:
        """Flush the service's background sends, then run the worker until the queue is empty."""
        await self.sender.flush()
        return await drain(self.worker)


@contextlib.asynccontextmanager
async def open_pipeline(tmp_path: Path, store_url: str) -> AsyncIterator[Pipeline]:
    """A seeded store at `store_url`, a SQLite queue in `tmp_path`, the service and the worker."""
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    store = open_store(store_url)
    await store.open()
    try:
        await seed(store)
        async with conveyor.App(queue_url) as app:
            for name in (QUEUE, DEAD_LETTER_QUEUE):
                await app.ensure_queue(name)
            sender = BackgroundSender(app.queue(QUEUE, schema=QueueMessage))
            deps = Deps(store, app.queue(QUEUE), app.queue(DEAD_LETTER_QUEUE), sender)
            worker = build_worker(queue_url, store_url)
            transport = httpx.ASGITransport(app=create_service(deps))
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://links.test") as client:
                    yield Pipeline(client, app, worker, store, sender, deps)
            finally:
                await sender.flush()
                await worker.close()
    finally:
        await store.close()


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with open_pipeline(tmp_path, f"sqlite:///{tmp_path / 'store.db'}") as pipeline:
        yield pipeline
