"""Redirect latency of the smart-link service with the background send on and off.

    python -m bench.redirect_latency            # 200 req/s, 5 s per round, 2 rounds per mode
    python -m bench.redirect_latency --smoke    # a couple of seconds, to see that it runs

The service (conveyor/demo, uvicorn, embedded SQLite) runs in its own process on
loopback; this process is an open-loop client (raw HTTP/1.1 over a pool of keep-alive
connections, much lighter than httpx): request i is due at start + i/rate whatever
happened to the ones before it, and its latency is counted from when it was due, so a stall
shows up in the figures instead of slowing the client down (no coordinated omission).
"send off" serves the same redirect and queues nothing. Rounds alternate off/on so that drift
on a shared machine hits both modes. Prints a table; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

import conveyor
from conveyor.demo.analytics import percentile
from conveyor.demo.demo import free_port, spawn, stop, until
from conveyor.demo.seed import seed, visits
from conveyor.demo.store import open_store

RESULTS = Path(__file__).parent / "results" / "redirect_latency.json"
WARMUP_SECONDS = 1.0
CONNECTIONS = 32


@dataclass(frozen=True)
class Result:
    mode: str
    rate: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: messages in the queues afterwards (send on): every request's event, warm-up included
    queued: int | None


class Connections:
    """A pool of raw HTTP/1.1 keep-alive connections: a client far lighter than httpx, so that on a
    small machine the figures are the server's, not the client's."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def __aenter__(self) -> Connections:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    async def get(self, path: str, headers: dict[str, str]) -> int:
        """GET `path`; returns the status code (the body is read and dropped)."""
        reader, writer = await self.idle.get()
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{lines}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        self.idle.put_nowait((reader, writer))
        return status


async def _load(pool: Connections, rate: float, seconds: float) -> tuple[list[float], int]:
    planned = visits(max(1, int(rate * seconds)))
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(due: float, path: str, headers: dict[str, str]) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, due - loop.time()))
        status = await pool.get(path, headers)
        if status in (302, 404):
            latencies.append(loop.time() - due)
        else:
            errors += 1

    async with asyncio.TaskGroup() as group:
        for i, item in enumerate(planned):
            group.create_task(one(start + i / rate, item.path, item.headers))
    return latencies, errors


async def _round(
    directory: Path, mode: str, rate: float, seconds: float, number: int
) -> tuple[list[float], int, int | None]:
    queue_db = directory / f"queue-{mode}-{number}.db"  # a fresh queue per round
    queue_url, store_url = f"sqlite:///{queue_db}", f"sqlite:///{directory / 'store.db'}"
    port = free_port(0)
    flags = ["--no-send"] if mode == "off" else []
    service = await spawn(
        "serve", "--queue-url", queue_url, "--store-url", store_url, "--port", str(port), *flags
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            if not await until(ready, 20.0):
                raise TimeoutError("the service did not start")
        async with Connections(port, CONNECTIONS) as pool:
            await _load(pool, rate, WARMUP_SECONDS)
            latencies, errors = await _load(pool, rate, seconds)
    finally:
        await stop(service, "the service")
    queued = None
    if mode == "on":
        async with conveyor.App(queue_url) as app:
            queued = (await app.queue("link-clicks").stats()).total
    return latencies, errors, queued


async def run(rate: float, seconds: float, rounds: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="redirect-latency-") as folder:
        directory = Path(folder)
        store = open_store(f"sqlite:///{directory / 'store.db'}")
        await store.open()
        await seed(store)
        await store.close()
        samples: dict[str, list[float]] = {"off": [], "on": []}
        errors = {"off": 0, "on": 0}
        queued = 0
        for number in range(rounds):
            for mode in ("off", "on"):
                latencies, failed, sent = await _round(directory, mode, rate, seconds, number)
                samples[mode] += latencies
                errors[mode] += failed
                queued += sent or 0
    results = []
    for mode in ("off", "on"):
        values = samples[mode]

        def ms(q: float, values: list[float] = values) -> float:
            return round((percentile(values, q) or 0.0) * 1000, 2)

        results.append(
            Result(
                mode=f"send {mode}",
                rate=rate,
                requests=len(values),
                errors=errors[mode],
                p50_ms=ms(50),
                p90_ms=ms(90),
                p99_ms=ms(99),
                max_ms=ms(100),
                queued=queued if mode == "on" else None,
            )
        )
    return results


def report(results: list[Result], seconds: float, rounds: int) -> None:
    table = Table(title=f"redirect latency, {results[0].rate:.0f} req/s, {rounds} x {seconds:.0f} s per mode")
    for column in ("mode", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "queued"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in results:
        queued = "-" if r.queued is None else f"{r.queued:,}"
        table.add_row(
            r.mode,
            f"{r.requests:,}",
            str(r.errors),
            f"{r.p50_ms}",
            f"{r.p90_ms}",
            f"{r.p99_ms}",
            f"{r.max_ms}",
            queued,
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode (alternating)")
    parser.add_argument("--smoke", action="store_true", help="one short round per mode")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args(argv)
    rate, seconds, rounds = (100.0, 1.0, 1) if args.smoke else (args.rate, args.seconds, args.rounds)
    results = asyncio.run(run(rate, seconds, rounds))
    report(results, seconds, rounds)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "redirect_latency",
        "rate": rate,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [asdict(r) for r in results],
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
