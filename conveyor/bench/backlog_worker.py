"""A worker process for the large-backlog case:
`python -m conveyor.bench.backlog_worker URL QUEUE COUNT BATCH`.

It drains COUNT messages from QUEUE with a consumer at BATCH and prints one JSON line: its drain
rate (msg/s) and its peak RSS in MB, sampled with psutil. A process of its own so that the RSS
is the worker's alone, not the benchmark's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import psutil

import conveyor
from conveyor.bench.conveyor_cases import consume
from conveyor.processes import watch_parent

RSS_SAMPLE_SECONDS = 0.02


async def sample_rss(peak: list[int]) -> None:
    process = psutil.Process()
    while True:
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(RSS_SAMPLE_SECONDS)


async def work(app: conveyor.App, queue: str, count: int, batch_size: int) -> dict[str, float]:
    """Drain `count` messages with `app` (which this closes); the rate and the peak RSS."""
    peak = [0]
    sampler = asyncio.create_task(sample_rss(peak))
    try:
        async with app:
            rate = await consume(app, queue, count, batch_size)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    peak[0] = max(peak[0], psutil.Process().memory_info().rss)
    return {"rate": rate, "rss_mb": peak[0] / 2**20}


def main(argv: list[str]) -> int:
    url, queue, count, batch_size = argv[0], argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(asyncio.run(work(conveyor.App(url), queue, count, batch_size))))
    return 0


if __name__ == "__main__":
    watch_parent()  # stop with the benchmark, however it ends
    raise SystemExit(main(sys.argv[1:]))
