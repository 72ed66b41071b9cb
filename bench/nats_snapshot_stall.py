"""How long a NATS queue's compaction and a reader's load of its snapshot hold the event loop
(checkout only):

python -m bench.nats_snapshot_stall [--messages 200000] [--rounds 3]

Fills one queue (its automatic compaction held off), then, per round: compacts it once from the
reader that filled it and starts a fresh reader that loads the snapshot. A probe task sleeping
0.01 s records the longest gap between its wake-ups during each (the loop's longest stall), and
the process CPU time each took. Runs against nats://127.0.0.1:4222 under a prefix of its own,
deleted afterwards. Prints one JSON line per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import conveyor
from conveyor.backends.nats import view as nats_view
from conveyor.backends.nats.backend import NatsBackend
from conveyor.bench.body import click_bytes
from conveyor.bench.engines import delete_streams
from conveyor.core.ids import new_message_id
from conveyor.types import OutgoingMessage

SERVER = "nats://127.0.0.1:4222"
QUEUE = "big"


async def probed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """The longest gap between a 0.01 s sleeper's wake-ups while `work` runs (ms) and the
    process CPU time it took (s)."""
    longest = [0.0]

    async def probe() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last - 0.01)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    cpu = time.process_time()
    await work()
    cpu = time.process_time() - cpu
    task.cancel()
    return longest[0] * 1000, cpu


async def fill(backend: NatsBackend, count: int) -> None:
    async def part(start: int) -> None:
        for first in range(start, count, 8000):
            batch = [
                OutgoingMessage(QUEUE, new_message_id(), click_bytes(n), "json")
                for n in range(first, min(first + 1000, count))
            ]
            await backend.send_many(batch)

    await asyncio.gather(*(part(start) for start in range(0, count, 1000)[:8]))


async def main(count: int, rounds: int) -> None:
    nats_view.COMPACT_MIN_BYTES = 1 << 60  # only the compactions this measures
    prefix = f"snapstall{uuid.uuid4().hex[:8]}"
    url = f"{SERVER}?prefix={prefix}"
    try:
        async with conveyor.App(url) as app:
            backend = app.backend
            assert isinstance(backend, NatsBackend)
            await app.create_queue(QUEUE, delivery_delay=0, retention_seconds=86_400)
            await fill(backend, count)
            view = await backend._synced(QUEUE)
            assert len(view.state.messages) == count
            for _ in range(rounds):
                compact_ms, compact_cpu = await probed(view._compact)
                async with conveyor.App(url) as fresh:
                    other = fresh.backend
                    assert isinstance(other, NatsBackend)
                    load_ms, load_cpu = await probed(lambda: other._synced(QUEUE))  # noqa: B023
                    loaded = await other._synced(QUEUE)
                    assert len(loaded.state.messages) == count
                print(
                    json.dumps(
                        {
                            "messages": count,
                            "snapshot_mb": round(view._snapshot_bytes / 2**20, 1),
                            "compact_stall_ms": round(compact_ms, 1),
                            "compact_cpu_s": round(compact_cpu, 2),
                            "load_stall_ms": round(load_ms, 1),
                            "load_cpu_s": round(load_cpu, 2),
                        }
                    ),
                    flush=True,
                )
    finally:
        await delete_streams([SERVER], prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.rounds))
