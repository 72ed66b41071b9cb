"""BackgroundSender: sends after the response, never breaks it, and is flushed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import conveyor
from conveyor.background import BackgroundSender
from conveyor.types import ContentType


class GatedQueue:
    """A real queue whose sends wait for `gate`: holds sends "pending" for as long as a test wants."""

    def __init__(self, queue: conveyor.Queue) -> None:
        self.queue = queue
        self.name = queue.name
        self.gate = asyncio.Event()
        self.waiting = 0
        self.arrived = asyncio.Event()
        self.expected = 0

    async def send(
        self, body: Any, *, delay_seconds: float | None = None, content_type: ContentType = "json"
    ) -> str:
        self.waiting += 1
        if self.waiting >= self.expected:
            self.arrived.set()
        await self.gate.wait()
        return await self.queue.send(body, delay_seconds=delay_seconds, content_type=content_type)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[conveyor.App]:
    async with conveyor.App(f"sqlite:///{tmp_path / 'queue.db'}") as app:
        await app.ensure_queue("events")
        yield app


async def stored(app: conveyor.App, queue: str = "events") -> int:
    return (await app.queue(queue).stats()).total


async def test_send_returns_at_once_and_the_message_arrives(app: conveyor.App) -> None:
    gated = GatedQueue(app.queue("events"))
    sender = BackgroundSender(gated)
    task = sender.send({"n": 1})
    await asyncio.sleep(0)
    assert not task.done() and sender.pending == 1
    gated.gate.set()
    message_id = await task
    assert message_id is not None
    assert sender.pending == 0 and sender.sent == 1
    assert [m.id for m in await app.queue("events").peek()] == [message_id]


async def test_flush_waits_for_every_pending_send(app: conveyor.App) -> None:
    gated = GatedQueue(app.queue("events"))
    sender = BackgroundSender(gated)
    for n in range(20):
        sender.send({"n": n})
    flush = asyncio.create_task(sender.flush())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not flush.done(), "flush returned while sends were still pending"
    gated.gate.set()
    assert await flush == 0
    assert sender.sent == 20 and sender.pending == 0
    assert await stored(app) == 20


async def test_flush_that_times_out_drops_and_counts_what_is_left(
    app: conveyor.App, caplog: pytest.LogCaptureFixture
) -> None:
    sender = BackgroundSender(GatedQueue(app.queue("events")))  # the gate never opens
    for n in range(3):
        sender.send({"n": n})
    with caplog.at_level(logging.ERROR, logger="conveyor.background"):
        assert await sender.flush(timeout=0.01) == 3
    assert sender.dropped == 3 and sender.pending == 0 and sender.sent == 0
    assert "3 background sends to events were still pending" in caplog.text


async def test_a_failing_send_is_logged_and_counted_never_raised(
    app: conveyor.App, caplog: pytest.LogCaptureFixture
) -> None:
    sender = BackgroundSender(app.queue("events", schema=dict[str, int]))
    with caplog.at_level(logging.ERROR, logger="conveyor.background"):
        bad = sender.send({"n": "not a number"})
        good = sender.send({"n": 1})
        assert await bad is None
        assert await good is not None
        await sender.flush()
    assert sender.failed == 1 and sender.sent == 1
    assert isinstance(sender.last_error, conveyor.MessageValidationError)
    assert "background send to events failed: MessageValidationError" in caplog.text


def service(sender: BackgroundSender, lifespan: Any = None) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = {"path": request.url.path}
        return PlainTextResponse("ok", background=sender.after_response(body))

    return Starlette(routes=[Route("/{anything}", endpoint)], lifespan=lifespan or sender.lifespan)


async def test_a_queue_error_never_breaks_the_response(tmp_path: Path) -> None:
    closed = conveyor.App(f"sqlite:///{tmp_path / 'queue.db'}")
    await closed.close()  # every send now raises AppClosed
    sender = BackgroundSender(closed.queue("events"))
    transport = httpx.ASGITransport(app=service(sender))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = [await client.get(f"/{n}") for n in range(3)]
    await sender.flush()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sender.failed == 3 and sender.sent == 0
    assert isinstance(sender.last_error, conveyor.ConveyorError)


@contextlib.asynccontextmanager
async def serving(api: Starlette) -> AsyncIterator[tuple[uvicorn.Server, asyncio.Task[None], str]]:
    """uvicorn on a free loopback port, in this event loop."""
    config = uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, task, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_uvicorn_answers_before_the_send_and_flushes_pending_sends_on_shutdown(
    app: conveyor.App,
) -> None:
    visits = 25
    gated = GatedQueue(app.queue("events"))
    gated.expected = visits
    sender = BackgroundSender(gated)
    pending_at_shutdown: list[int] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with sender.lifespan():
            yield
            pending_at_shutdown.append(sender.pending)
            gated.gate.set()  # sends may complete now; the lifespan's exit must wait for them

    async with serving(service(sender, lifespan)) as (server, task, base_url):
        async with httpx.AsyncClient(base_url=base_url) as client:
            responses = await asyncio.gather(*(client.get(f"/visit-{n}") for n in range(visits)))
        # every visitor got an answer although no send could complete yet
        assert [r.status_code for r in responses] == [200] * visits
        await asyncio.wait_for(gated.arrived.wait(), 10)
        assert await stored(app) == 0
        server.should_exit = True
        await task
        assert sender.pending == 0
    assert pending_at_shutdown == [visits]
    assert sender.sent == visits and sender.failed == 0 and sender.dropped == 0
    assert await stored(app) == visits
