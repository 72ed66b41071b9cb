"""Handlers are checked when they are registered; a plain `def` handler runs in a worker thread."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

import conveyor
from conveyor.testing import drain


def test_a_handler_that_cannot_take_batch_and_env_is_refused_at_the_decorator() -> None:
    app = conveyor.App("memory://")

    async def takes_one(batch: conveyor.MessageBatch) -> None: ...

    with pytest.raises(conveyor.InvalidHandler, match=r"cannot be called as handler\(batch, env\)"):
        app.consumer("jobs")(takes_one)  # type: ignore[type-var]
    with pytest.raises(conveyor.InvalidHandler, match="not callable"):
        app.consumer("jobs")(42)  # type: ignore[type-var]
    assert app.consumers == []


def test_invalid_handler_is_a_conveyor_error() -> None:
    assert issubclass(conveyor.InvalidHandler, conveyor.ConveyorError)
    assert issubclass(conveyor.InvalidHandler, TypeError)


async def test_a_sync_handler_runs_in_a_thread_once_per_delivery() -> None:
    app = conveyor.App("memory://")
    deliveries: Counter[tuple[int, int]] = Counter()
    threads: set[int] = set()

    @app.consumer("jobs", max_retries=2, dead_letter_queue="jobs-dlq")
    def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        threads.add(threading.get_ident())
        for message in batch.messages:
            deliveries[(message.body["n"], message.attempts)] += 1
            if message.body["n"] == 3:
                message.retry()

    async with app:
        await app.queue("jobs").send_batch([{"n": n} for n in range(1, 5)])
        await drain(app)
        assert (await app.queue("jobs").stats()).total == 0
        dead = await app.queue("jobs-dlq").peek()
    # each message once per delivery: the side effect did not repeat; n=3 three times, then the DLQ
    assert deliveries == {(1, 1): 1, (2, 1): 1, (3, 1): 1, (3, 2): 1, (3, 3): 1, (4, 1): 1}
    assert [letter.body for letter in dead] == [{"n": 3}]
    assert threading.get_ident() not in threads


async def test_a_sync_handler_that_raises_retries_its_batch() -> None:
    app = conveyor.App("memory://")
    calls: list[int] = []

    @app.consumer("jobs", max_retries=1, dead_letter_queue="jobs-dlq")
    def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        calls.extend(message.attempts for message in batch.messages)
        raise RuntimeError("nope")

    async with app:
        await app.queue("jobs").send({"n": 1})
        await drain(app)
        dead = await app.queue("jobs-dlq").peek()
    assert calls == [1, 2]
    assert dead[0].dead_letter is not None and "RuntimeError: nope" in dead[0].dead_letter.error


async def test_a_callable_object_with_an_async_call_stays_on_the_loop() -> None:
    app = conveyor.App("memory://")
    seen: list[Any] = []

    class Handler:
        async def __call__(self, batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            seen.append(threading.get_ident())

    app.consumer("jobs")(Handler())
    async with app:
        await app.queue("jobs").send({"n": 1})
        await drain(app)
    assert seen == [threading.get_ident()]


async def test_a_sync_handler_sends_with_send_sync(tmp_path: Any) -> None:
    app = conveyor.App(f"sqlite:///{tmp_path / 'q.db'}")

    @app.consumer("jobs")
    def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        env.queues["done"].send_sync({"n": len(batch.messages)})

    async with app:
        await app.queue("jobs").send({"n": 1})
        await drain(app, queues=["jobs"])
        assert [m.body for m in await app.queue("done").peek()] == [{"n": 1}]


async def test_a_sync_consumer_runs_max_concurrency_batches_at_once_in_its_own_threads() -> None:
    app = conveyor.App("memory://")
    concurrency = 8  # more than the loop's default executor has threads on a small machine
    together = threading.Barrier(concurrency, timeout=20)  # passes only if all 8 run at once
    threads: set[str] = set()
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    @app.consumer("jobs", max_batch_size=1, max_concurrency=concurrency)
    def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        with lock:
            threads.add(threading.current_thread().name)
            running[0] += 1
            running[1] = max(running)
        together.wait()
        with lock:
            running[0] -= 1

    async with app:
        await app.queue("jobs").send_batch([{"n": n} for n in range(concurrency * 2)])
        assert await drain(app) == concurrency * 2
    # never more handlers at once than max_concurrency (the pool may keep a spare idle thread:
    # ThreadPoolExecutor starts one when a finished worker has not yet marked itself idle)
    assert running[1] == concurrency
    assert all(name.startswith("conveyor-jobs") for name in threads)
