"""What a NATS worker holds in memory, measured in worker processes of their own (checkout only):

python -m bench.nats_memory idle [--idle-queues 50] [--per-queue 2000] [--busy 20000]
    one busy queue and many idle queues holding a backlog each: a worker consuming the busy queue
    (its retention sweep included) drains it; its peak RSS, and how many queues it read.
python -m bench.nats_memory backlog [--messages 1000000] [--window 50000]
    one queue filled with send_batch: a fresh process's start-up (connect, then read the queue's
    log up to now) and its RSS, then its drain rate at batch 100 over a window, peak RSS.

Both run against nats://127.0.0.1:4222 under a prefix of their own, deleted afterwards. The figures
go to docs/nats.md ("What each part costs").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid

import psutil

import conveyor
from conveyor.bench.body import click
from conveyor.bench.conveyor_cases import consume
from conveyor.bench.engines import delete_streams

SERVER = "nats://127.0.0.1:4222"
BATCH = 100
FILLERS = 8  # concurrent send_batch tasks while filling


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def fill(app: conveyor.App, queue: str, count: int) -> None:
    handle = app.queue(queue)
    chunks = [min(BATCH, count - start) for start in range(0, count, BATCH)]

    async def filler(part: list[int]) -> None:
        for size in part:
            await handle.send_batch([click(n) for n in range(size)])

    await asyncio.gather(*(filler(chunks[i::FILLERS]) for i in range(FILLERS)))


async def held_views(app: conveyor.App) -> int:
    views = getattr(app.backend, "_views", {})
    return len(views)


# -- what runs in the worker process -------------------------------------------------------------


async def worker(url: str, queue: str, count: int) -> dict[str, float]:
    """Start, read `queue` up to now (timed), sweep once (timed), then drain `count` messages at
    batch 100."""
    peak = [rss_mb()]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    app = conveyor.App(url)
    await app.connect()
    stats = await app.queue(queue).stats()
    opened = time.perf_counter() - started
    rss_open = rss_mb()
    started = time.perf_counter()
    await app.sweep()  # what the worker's sweeper does first (it runs beside the consumer)
    swept = time.perf_counter() - started
    rate = await consume(app, queue, count, BATCH)
    started = time.perf_counter()
    await app.sweep()  # the next minute's
    swept_again = time.perf_counter() - started
    views = await held_views(app)
    await app.close()
    sampler.cancel()
    return {
        "backlog": stats.total,
        "startup_seconds": round(opened, 2),
        "rss_after_startup_mb": round(rss_open, 1),
        "sweep_seconds": round(swept, 2),
        "next_sweep_seconds": round(swept_again, 2),
        "drain_rate": round(rate),
        "peak_rss_mb": round(max(peak[0], rss_mb()), 1),
        "queues_read": views,
    }


def run_worker(url: str, queue: str, count: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.nats_memory", "worker", url, queue, str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


# -- the scenarios -------------------------------------------------------------------------------


async def idle(args: argparse.Namespace, url: str) -> dict[str, object]:
    async with conveyor.App(url) as app:
        await fill(app, "busy", args.busy)
        for n in range(args.idle_queues):
            await fill(app, f"idle-{n}", args.per_queue)
    return {
        "idle_queues": args.idle_queues,
        "per_queue": args.per_queue,
        **run_worker(url, "busy", args.busy),
    }


async def backlog(args: argparse.Namespace, url: str) -> dict[str, object]:
    started = time.perf_counter()
    async with conveyor.App(url) as app:
        await fill(app, "backlog", args.messages)
    filled = time.perf_counter() - started
    result = run_worker(url, "backlog", args.window)
    return {"messages": args.messages, "fill_rate": round(args.messages / filled), **result}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    idle_parser = sub.add_parser("idle")
    idle_parser.add_argument("--idle-queues", type=int, default=50)
    idle_parser.add_argument("--per-queue", type=int, default=2_000)
    idle_parser.add_argument("--busy", type=int, default=20_000)
    backlog_parser = sub.add_parser("backlog")
    backlog_parser.add_argument("--messages", type=int, default=1_000_000)
    backlog_parser.add_argument("--window", type=int, default=50_000)
    worker_parser = sub.add_parser("worker")
    worker_parser.add_argument("url")
    worker_parser.add_argument("queue")
    worker_parser.add_argument("count", type=int)
    args = parser.parse_args()
    if args.scenario == "worker":
        print(json.dumps(asyncio.run(worker(args.url, args.queue, args.count))))
        return 0
    prefix = f"mem-{uuid.uuid4().hex[:8]}"
    url = f"{SERVER}?prefix={prefix}"
    try:
        scenario = idle if args.scenario == "idle" else backlog
        print(json.dumps(asyncio.run(scenario(args, url))))
    finally:
        asyncio.run(delete_streams([SERVER], prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
