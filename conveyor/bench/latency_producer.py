"""The producer of the cross-process latency case:
`python -m conveyor.bench.latency_producer URL QUEUE COUNT`.

It sends COUNT messages at LATENCY_RATE a second, the way a web process sends to a worker in
another process, and prints one JSON line: when each send began (`time.perf_counter()`, the
machine's monotonic clock, which the consumer's process reads too).
"""

from __future__ import annotations

import asyncio
import json
import sys

import conveyor
from conveyor.bench.body import click
from conveyor.bench.raw_latency import paced
from conveyor.processes import watch_parent


async def produce(url: str, queue: str, count: int) -> dict[int, float]:
    sent: dict[int, float] = {}
    async with conveyor.App(url) as app:
        handle = app.queue(queue)

        async def send(n: int) -> None:
            await handle.send(click(n))

        await paced(count, send, sent)
    return sent


def main(argv: list[str]) -> int:
    url, queue, count = argv[0], argv[1], int(argv[2])
    print(json.dumps(asyncio.run(produce(url, queue, count))))
    return 0


if __name__ == "__main__":
    watch_parent()
    sys.exit(main(sys.argv[1:]))
