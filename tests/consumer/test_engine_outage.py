"""A worker whose engine goes away keeps running: one warning line per failed lease, a growing
pause between tries, and delivery again once the engine is back."""

from __future__ import annotations

import asyncio
import logging

import pytest

import conveyor
from conveyor.consumer import runner
from conveyor.errors import BackendUnavailable, StorageUnusable
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


async def lease_log_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, error: Exception, tries: int
) -> list[logging.LogRecord]:
    """The lines a worker logs while every lease raises `error`, after `tries` tries."""
    monkeypatch.setattr(runner, "LEASE_RETRY_FIRST_SECONDS", 0.01)
    app = conveyor.App("memory://")
    tried = 0
    enough = asyncio.Event()

    @app.consumer("jobs")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    async def failing_lease(
        queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        nonlocal tried
        tried += 1
        if tried >= tries:
            enough.set()
        raise error

    monkeypatch.setattr(app.backend, "lease_many", failing_lease)
    with caplog.at_level(logging.WARNING, logger="conveyor.consumer"):
        await run_until(app, enough)
    await app.close()
    return [r for r in caplog.records if "leasing from jobs failed" in r.getMessage()]


async def test_an_unexpected_lease_error_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    [first, *_] = await lease_log_lines(caplog, monkeypatch, ValueError("a bug in the engine"), 1)
    assert first.levelno == logging.ERROR and first.exc_info is not None


async def test_unusable_storage_is_one_error_line_per_lease_try_without_a_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. a NATS log written in a newer record format: the message tells the operator what to do."""
    error = StorageUnusable("queue jobs: record 7 is in format 3 (this conveyor reads up to 2); upgrade it")
    lines = await lease_log_lines(caplog, monkeypatch, error, 2)
    assert len(lines) >= 2
    assert all(r.levelno == logging.ERROR and r.exc_info is None for r in lines)
    assert "format 3" in lines[0].getMessage()
