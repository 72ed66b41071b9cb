"""The consumer: a Router over the event union; a batch of clicks becomes one bulk INSERT.

Bodies that fail validation never reach these handlers: the Router dead-letters them (to
`link-clicks-dlq`) with the validation error. A handler that raises retries its events, and
after `max_retries` they are dead-lettered too. Delivery is at least once, so a batch whose
settlement is lost after its INSERT committed is stored twice; the page tolerates that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import conveyor
from conveyor.demo.models import LinkClick, LinkMiss, QueueMessage
from conveyor.demo.store import open_store

QUEUE = "link-clicks"
DEAD_LETTER_QUEUE = "link-clicks-dlq"
# Big batches make few, large INSERTs; a short timeout keeps the page fresh when traffic is light.
MAX_BATCH_SIZE = 100
MAX_BATCH_TIMEOUT = 0.1

router = conveyor.Router(QueueMessage)


@router.on(LinkClick, batch=True)
async def store_clicks(events: list[LinkClick], env: conveyor.Env) -> None:
    await env.store.insert_clicks([event.data for event in events])


@router.on(LinkMiss, batch=True)
async def store_misses(events: list[LinkMiss], env: conveyor.Env) -> None:
    await env.store.insert_misses([event.data for event in events])


def register(app: conveyor.App, *, queue: str = QUEUE, dead_letter_queue: str = DEAD_LETTER_QUEUE) -> None:
    """Make `router` the consumer of `queue`; the app's lifespan must set `env.store`."""
    app.consumer(
        queue,
        max_batch_size=MAX_BATCH_SIZE,
        max_batch_timeout=MAX_BATCH_TIMEOUT,
        max_retries=3,
        dead_letter_queue=dead_letter_queue,
    )(router)


def build_worker(queue_url: str, store_url: str) -> conveyor.App:
    """The worker's app: the consumer registered, and a lifespan that opens the store as `env.store`."""
    app = conveyor.App(queue_url)
    register(app)

    @app.lifespan
    async def open_store_for_handlers(env: conveyor.Env) -> AsyncIterator[None]:
        store = open_store(store_url)
        await store.open()
        env.store = store
        try:
            yield
        finally:
            await store.close()

    return app
