"""A worker whose engine goes away keeps running: one warning line per failed lease, a growing
pause between tries, and delivery again once the engine is back."""

from __future__ import annotations

import asyncio
import logging

import pytest

import conveyor
from conveyor.consumer import runner
from conveyor.errors import BackendUnavailable
from conveyor.types import LeasedMessage


async def run_until(app: conveyor.App, event: asyncio.Event) -> None:
    """Run the app's consumers until `event` is set (10 s at most), then stop them."""
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    try:
        async with asyncio.timeout(10):
            await event.wait()
    finally:
        stop.set()
        await worker


async def test_leasing_from_an_unreachable_engine_backs_off_quietly_and_recovers(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "LEASE_RETRY_FIRST_SECONDS", 0.01)
    app = conveyor.App("memory://")
    handled: list[object] = []
    done = asyncio.Event()

    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)
        done.set()

    await app.queue("jobs").send("after the outage")
    real_lease = app.backend.lease_many
    failures = 0

    async def flaky_lease(
        queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        nonlocal failures
        if failures < 4:  # the engine is down for the first four tries
            failures += 1
            raise BackendUnavailable("connection refused")
        return await real_lease(queue, limit, visibility_timeout, handed=handed)

    monkeypatch.setattr(app.backend, "lease_many", flaky_lease)
    with caplog.at_level(logging.WARNING, logger="conveyor.consumer"):
        await run_until(app, done)
    assert handled == ["after the outage"]
    warnings = [r for r in caplog.records if "leasing from jobs failed" in r.getMessage()]
    assert len(warnings) == 4
    assert all(r.exc_info is None for r in warnings)  # one line each, no traceback
    pauses = [float(r.getMessage().rsplit("retrying in ", 1)[1].rstrip("s")) for r in warnings]
    assert pauses == sorted(pauses) and pauses[-1] > pauses[0]
    await app.close()


async def test_an_unexpected_lease_error_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "LEASE_RETRY_FIRST_SECONDS", 0.01)
    app = conveyor.App("memory://")
    failed = asyncio.Event()

    @app.consumer("jobs")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    async def broken_lease(
        queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        failed.set()
        raise ValueError("a bug in the engine")

    monkeypatch.setattr(app.backend, "lease_many", broken_lease)
    with caplog.at_level(logging.WARNING, logger="conveyor.consumer"):
        await run_until(app, failed)
    [first, *_] = [r for r in caplog.records if "leasing from jobs failed" in r.getMessage()]
    assert first.levelno == logging.ERROR and first.exc_info is not None
    await app.close()
