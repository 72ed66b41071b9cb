"""Probe of the Redis large-backlog transient (see bench/README.md): fill one queue, then drain it
in chunks, printing each chunk's median lease and settle time and the server's time per script.

    python -m bench.redis_backlog_probe [--fill 300000] [--chunk 20000] [--url redis://...]

Uses its own key prefix and deletes the queue at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import conveyor
from bench.conveyor_cases import fill
from conveyor.types import Settlement

BATCH = 100
DEFAULT_URL = "redis://127.0.0.1:6379/0"


async def script_usec(app: conveyor.App) -> tuple[int, int]:
    """EVALSHA calls and microseconds so far, from INFO commandstats."""
    client = getattr(app.backend, "_client")  # noqa: B009 - a probe, not library code
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def probe(url: str, count: int, chunk: int) -> None:
    async with conveyor.App(url) as app:
        queue = "probe"
        started = time.perf_counter()
        await fill(app, queue, count)
        print(f"filled {count:,} in {time.perf_counter() - started:.1f}s")
        backend = app.backend
        try:
            for n in range(count // chunk):
                leases, settles = [], []
                calls, usec = await script_usec(app)
                for _ in range(chunk // BATCH):
                    t0 = time.perf_counter()
                    got = await backend.lease_many(queue, BATCH, 30)
                    t1 = time.perf_counter()
                    await app.core.settle(queue, Settlement(acks=[m.lease_id for m in got]))
                    leases.append(t1 - t0)
                    settles.append(time.perf_counter() - t1)
                calls2, usec2 = await script_usec(app)
                per_call = (usec2 - usec) / max(1, calls2 - calls)
                print(
                    f"chunk {n:3d}: lease {statistics.median(leases) * 1e3:.2f} ms, "
                    f"settle {statistics.median(settles) * 1e3:.2f} ms, server {per_call:.0f} µs/script"
                )
        finally:
            await app.delete_queue(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}prefix=conveyor_probe_{uuid.uuid4().hex[:8]}"
    asyncio.run(probe(url, args.fill, args.chunk))


if __name__ == "__main__":
    main()
