"""The app a worker process runs: `conveyor --url URL worker reliability.roles.worker_app:app`.

Its consumer comes from RELIABILITY_WORKER (WorkerSettings). The handler records every message it
completed in the ledger, fsynced, before it returns. A body may carry `"poison"`:
- `exit`: the handler records the messages before it, then the delivery, then `os._exit(70)`;
- `raise`: left unmarked and the handler raises at the end (the others are acked explicitly);
- `block`: `time.sleep(block_seconds)` holds the event loop, then it completes like any other.
With `record_starts`, every message is also recorded as its handler starts.
A watcher records every time the event loop ran late by half the visibility timeout or more.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import conveyor
from reliability.ledger import LedgerFile, now
from reliability.roles.settings import POISON_EXIT_CODE, WORKER_ENV, WorkerSettings

SETTINGS = WorkerSettings.from_env(WORKER_ENV)
LEDGER = Path(SETTINGS.ledger)
DONE = LedgerFile(LEDGER, "done")
POISON = LedgerFile(LEDGER, "poison")
STALLS = LedgerFile(LEDGER, "stalls")
STARTS = LedgerFile(LEDGER, "starts") if SETTINGS.record_starts else None
# How often the loop watcher wakes.
WATCH_TICK_SECONDS = 0.05

app = conveyor.App(auto_create=SETTINGS.auto_create)


class PoisonError(Exception):
    """What a "raise" poison makes the handler raise."""


@app.lifespan
async def watch_the_loop(env: conveyor.Env) -> AsyncIterator[None]:
    watcher = asyncio.create_task(_watch())
    try:
        yield
    finally:
        watcher.cancel()


async def _watch() -> None:
    threshold = SETTINGS.visibility_timeout / 2
    while True:
        before = time.monotonic()
        await asyncio.sleep(WATCH_TICK_SECONDS)
        late = time.monotonic() - before - WATCH_TICK_SECONDS
        if late >= threshold:
            end = now()
            STALLS.write({"pid": os.getpid(), "from": end - late - WATCH_TICK_SECONDS, "to": end})


def _done(message: conveyor.Message, key: str, started: float) -> dict[str, Any]:
    return {"id": message.id, "key": key, "pid": os.getpid(), "a": message.attempts, "s": started, "t": now()}


async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    started = now()
    if STARTS is not None:
        STARTS.write(
            *({"key": m.body["key"], "id": m.id, "a": m.attempts, "t": started} for m in batch.messages)
        )
    if SETTINGS.handler_seconds:
        await asyncio.sleep(SETTINGS.handler_seconds)
    done: list[dict[str, Any]] = []
    raised: list[str] = []
    for message in batch.messages:
        body = message.body
        key = body["key"]
        poison = body.get("poison")
        if poison:
            POISON.write(
                {
                    "key": key,
                    "id": message.id,
                    "a": message.attempts,
                    "pid": os.getpid(),
                    "t": now(),
                    "kind": poison,
                }
            )
            if poison == "exit":
                DONE.write(*done)
                os._exit(POISON_EXIT_CODE)
            if poison == "raise":
                raised.append(key)
                continue
            if poison == "block":
                time.sleep(SETTINGS.block_seconds)  # noqa: ASYNC251 - the fault: it holds the loop
        done.append(_done(message, key, started))
        message.ack()  # explicit: it stands when the handler raises for a poison below
    DONE.write(*done)
    if raised:
        raise PoisonError(f"poison message {', '.join(raised)}")


app.consumer(
    SETTINGS.queue,
    max_batch_size=SETTINGS.max_batch_size,
    max_batch_timeout=SETTINGS.max_batch_timeout,
    max_retries=SETTINGS.max_retries,
    dead_letter_queue=SETTINGS.dead_letter_queue,
    max_concurrency=SETTINGS.max_concurrency,
    visibility_timeout=SETTINGS.visibility_timeout,
)(handle)
