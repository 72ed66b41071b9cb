"""The dashboard in headless Chromium at a phone's and a desktop's width: nothing overflows
sideways, the figures are the engine's, and the screenshots are kept as test artefacts."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from conveyor.admin import QueueHistory, recent_workers
from conveyor.http import create_api
from conveyor.testing import drain
from tests.http.conftest import TOKEN
from tests.support import browser
from tests.support.polling import eventually

pytestmark = pytest.mark.slow

PAGES = {
    "dashboard": "/",
    "dashboard-queue": "/dashboard/queues/emails",
    "dashboard-dead-letters": "/dashboard/queues/emails-dlq",
    "dashboard-topics": "/dashboard/topics",
}
# Each queue row's name and backlog cell, as the page shows them.
BACKLOGS = """() => [...document.querySelectorAll("tr[data-queue]")].map(
  row => [row.dataset.queue, row.querySelector('td[data-label="backlog"]').textContent])"""

# Each worker row's pid, as the page shows it.
WORKER_PIDS = """() => [...document.querySelectorAll("tr[data-worker]")].map(
  row => row.querySelector('td[data-label="pid"]').textContent)"""


async def populated(app: conveyor.App) -> None:
    """Queues with messages, dead letters with their error, a paused queue and a topic."""

    @app.consumer("emails", max_retries=0, dead_letter_queue="emails-dlq")
    async def send_email(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise LookupError("no mailbox at example.invalid")  # with max_retries=0: dead-lettered at once

    for name in ("emails", "emails-dlq", "reports", "kitchen"):
        await app.create_queue(name)
    await app.queue("emails").send_batch([{"to": f"user{n}@example.invalid"} for n in range(3)])
    await drain(app)
    app.consumers.clear()  # the rest waits in the queue
    await app.queue("emails").send_batch(
        [{"to": f"user{n}@example.com", "template": "welcome"} for n in range(40)]
    )
    await app.queue("reports").send({"kind": "daily"})
    await app.queue("reports").pause()
    await app.subscribe("orders", queue="kitchen", types=["ORDER_UP", "ORDER_CANCELLED", "ORDER_REFUNDED"])


@contextlib.asynccontextmanager
async def a_worker(app: conveyor.App) -> AsyncIterator[None]:
    """A worker running (its heartbeat listed under Workers) on the empty queue `kitchen`."""

    @app.consumer("kitchen", max_concurrency=4)
    async def cook(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    worker = app.worker()
    running = asyncio.create_task(worker.run())
    await worker.started.wait()
    await eventually(lambda: has_workers(app), "the worker's first heartbeat")
    try:
        yield
    finally:
        worker.stop()
        await running


async def has_workers(app: conveyor.App) -> bool:
    return bool(await recent_workers(app))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[conveyor.App, str]]:
    async with conveyor.App(f"sqlite:///{tmp_path / 'dashboard.db'}", auto_create=False) as app:
        await populated(app)
        api = create_api(app, token=TOKEN)
        async with browser.serving(api) as base_url, a_worker(app):
            history: QueueHistory = api.state.queue_history
            await history.sample()
            yield app, base_url


@pytest.mark.parametrize("width", browser.WIDTHS)
async def test_the_dashboard_fits_and_shows_the_engines_figures(
    served: tuple[conveyor.App, str], width: int
) -> None:
    app, base_url = served
    expected = {info.name: (await app.queue(info.name).stats()).backlog for info in await app.list_queues()}
    async with browser.chromium_browser() as chromium:
        for name, path in PAGES.items():
            page = await browser.open_page(chromium, base_url + path, width=width, password=TOKEN)
            fits = await browser.overflow(page)
            assert fits.fits, (path, fits)
            if path == "/":
                shown = dict(await page.evaluate(BACKLOGS))
                assert shown == {queue: f"{count:,}" for queue, count in expected.items()}
                assert await page.evaluate(WORKER_PIDS) == [str(os.getpid())]
                assert await page.locator('tr[data-topic="orders"]').count() == 1
            if name == "dashboard-topics":
                assert await page.locator('tr[data-subscription="kitchen"]').count() == 1
            if name == "dashboard-dead-letters":
                errors = await page.locator(".error-text").all_text_contents()
                assert errors == ["LookupError: no mailbox at example.invalid"] * 3
            await browser.keep_screenshot(page, f"{name}-{width}")
