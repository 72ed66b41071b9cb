"""One process of the scaling cases: `python -m conveyor.bench.scaling_worker drain|produce ...`.

It opens its App, prints `ready`, and waits for a `go` line on stdin, so that the parent times
only the work, not the start-up of Python and the drivers.

- `drain URL QUEUE BATCH`: runs a consumer on QUEUE from `go` until a `stop` line (or end of
  input); prints one JSON line: messages handled and the CPU seconds this process spent.
- `produce URL QUEUE COUNT FIRST`: from `go`, `send_batch`es of 100 for messages FIRST..FIRST+COUNT;
  prints one JSON line: when it finished (time.monotonic, one clock for every process of the
  machine) and its CPU seconds; then keeps its connections open until a `stop` line, so that the
  parent can read what the engine's processes serving them spent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import psutil

import conveyor
from conveyor.bench.body import click
from conveyor.bench.modes import BULK
from conveyor.processes import watch_parent

READY, GO, STOP = "ready", "go", "stop"


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def next_line() -> str:
    # stdin is read in a thread: the event loop keeps serving the consumer meanwhile
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def announce(figures: dict[str, float] | None = None) -> None:
    print(READY if figures is None else json.dumps(figures), flush=True)


async def drain(url: str, queue: str, batch_size: int) -> dict[str, float]:
    handled = 0

    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        nonlocal handled
        for message in batch.messages:
            message.body  # noqa: B018 - a real handler reads every body
        handled += len(batch.messages)

    async with conveyor.App(url) as app:
        await app.ensure_queue(queue)
        app.consumer(queue, max_batch_size=batch_size, max_batch_timeout=0.1)(handle)
        announce()
        await next_line()
        started = cpu_seconds()
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_consumers(stop=stop))
        await next_line()  # "stop", or "" at end of input
        stop.set()
        await worker
        return {"handled": handled, "cpu_seconds": cpu_seconds() - started}


async def produce(url: str, queue: str, count: int, first: int) -> None:
    async with conveyor.App(url) as app:
        await app.ensure_queue(queue)
        handle = app.queue(queue)
        announce()
        await next_line()
        started = cpu_seconds()
        for start in range(first, first + count, BULK):
            await handle.send_batch([click(n) for n in range(start, min(start + BULK, first + count))])
        announce({"finished": time.monotonic(), "cpu_seconds": cpu_seconds() - started})
        await next_line()


def main(argv: list[str]) -> int:
    role, url, queue = argv[0], argv[1], argv[2]
    if role == "drain":
        announce(asyncio.run(drain(url, queue, int(argv[3]))))
    elif role == "produce":
        asyncio.run(produce(url, queue, int(argv[3]), int(argv[4])))
    else:
        raise SystemExit(f"unknown role {role!r}: drain or produce")
    return 0


if __name__ == "__main__":
    watch_parent()  # stop with the benchmark, however it ends
    raise SystemExit(main(sys.argv[1:]))
