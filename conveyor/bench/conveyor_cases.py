"""The conveyor side of every comparison. Each case runs on a fresh App and its own queue, which
it deletes afterwards, and returns the figure of one repeat."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import conveyor
from conveyor.bench.body import click
from conveyor.bench.modes import BULK, SENDERS
from conveyor.bench.raw_latency import paced
from conveyor.codec import encode_body
from conveyor.core.ids import new_message_id
from conveyor.processes import stop_with_me
from conveyor.types import OutgoingMessage

# The largest write the backlog filler hands the engine at once.
FILL_CHUNK = 1_000
# How long the latency case waits for the last message before giving up.
LATENCY_GRACE_SECONDS = 10.0

T = TypeVar("T")


async def _on_queue(url: str, queue: str, run: Callable[[conveyor.App], Awaitable[T]]) -> T:
    async with conveyor.App(url) as app:
        await app.create_queue(queue, exist_ok=True)
        try:
            return await run(app)
        finally:
            await app.delete_queue(queue)


async def send_one(url: str, queue: str, count: int) -> float:
    """Sequential `send`s: each waits for its own commit."""

    async def run(app: conveyor.App) -> float:
        handle = app.queue(queue)
        started = time.perf_counter()
        for n in range(count):
            await handle.send(click(n))
        return count / (time.perf_counter() - started)

    return await _on_queue(url, queue, run)


async def send_concurrent(url: str, queue: str, count: int) -> float:
    """`SENDERS` tasks each sending one by one: group commit writes them together."""

    async def run(app: conveyor.App) -> float:
        handle = app.queue(queue)
        per_sender = count // SENDERS

        async def sender(first: int) -> None:
            for n in range(first, first + per_sender):
                await handle.send(click(n))

        started = time.perf_counter()
        await asyncio.gather(*(sender(i * per_sender) for i in range(SENDERS)))
        return per_sender * SENDERS / (time.perf_counter() - started)

    return await _on_queue(url, queue, run)


async def send_batch(url: str, queue: str, count: int) -> float:
    """Sequential `send_batch`es of 100."""

    async def run(app: conveyor.App) -> float:
        handle = app.queue(queue)
        started = time.perf_counter()
        for start in range(0, count, BULK):
            await handle.send_batch([click(n) for n in range(start, min(start + BULK, count))])
        return count / (time.perf_counter() - started)

    return await _on_queue(url, queue, run)


async def fill(app: conveyor.App, queue: str, count: int) -> None:
    """Put `count` messages in the backlog fast (setup, not measured): big writes straight to the engine."""
    await app.ensure_queue(queue)
    for start in range(0, count, FILL_CHUNK):
        await app.backend.send_many(
            [
                OutgoingMessage(queue, new_message_id(), encode_body(click(n), "json"), "json")
                for n in range(start, min(start + FILL_CHUNK, count))
            ]
        )


async def consume(app: conveyor.App, queue: str, count: int, batch_size: int) -> float:
    """Run a consumer until it has handled `count` messages; returns msg/s, shutdown included."""
    handled = 0
    done = asyncio.Event()

    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal handled
        for message in batch.messages:
            message.body  # noqa: B018 - a real handler reads every body
        handled += len(batch.messages)
        if handled >= count:
            done.set()

    app.consumer(queue, max_batch_size=batch_size, max_batch_timeout=0.1)(handle)
    started = time.perf_counter()
    await app.run_consumers(stop=done)
    return handled / (time.perf_counter() - started)


async def drain(url: str, queue: str, count: int, batch_size: int) -> float:
    """A consumer at `batch_size` draining a backlog of `count` (every body decoded)."""

    async def run(app: conveyor.App) -> float:
        await fill(app, queue, count)
        return await consume(app, queue, count, batch_size)

    return await _on_queue(url, queue, run)


async def latency(url: str, queue: str, count: int, *, other_process: bool = False) -> tuple[float, float]:
    """p50 and p99 in ms from calling `send` to the handler holding the message, at 100 msg/s
    with `max_batch_timeout=0`; the producer in this process, or with `other_process` in one of
    its own (latency_producer.py), as a web process sends to a worker."""

    async def run(app: conveyor.App) -> list[float]:
        sent: dict[int, float] = {}
        received: dict[int, float] = {}
        done, stopped = asyncio.Event(), asyncio.Event()

        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            now = time.perf_counter()
            for message in batch.messages:
                received[message.body["data"]["n"]] = now
            if len(received) >= count:
                done.set()

        app.consumer(queue, max_batch_timeout=0)(handle)
        worker = asyncio.create_task(app.run_consumers(stop=stopped))
        await asyncio.sleep(0.3)  # let the consumer start and go idle
        try:
            if other_process:
                sent.update(await _produce_elsewhere(url, queue, count))
            else:
                handle_ = app.queue(queue)

                async def produce(n: int) -> None:
                    await handle_.send(click(n))

                await paced(count, produce, sent)
            await asyncio.wait_for(done.wait(), LATENCY_GRACE_SECONDS)
        finally:
            stopped.set()
            await worker
        return [received[n] - sent[n] for n in received]

    delays = await _on_queue(url, queue, run)
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _produce_elsewhere(url: str, queue: str, count: int) -> dict[int, float]:
    """Run latency_producer.py; when each of its sends began (perf_counter is the machine's
    monotonic clock, the same in both processes)."""
    producer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor.bench.latency_producer",
        url,
        queue,
        str(count),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **stop_with_me(),
    )
    out, err = await producer.communicate()
    if producer.returncode != 0:
        raise RuntimeError(f"the latency producer failed: {err.decode(errors='replace').strip()[-2000:]}")
    return {int(n): float(at) for n, at in json.loads(out.decode().strip().splitlines()[-1]).items()}
