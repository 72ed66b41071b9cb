"""The HTTP cases: `conveyor serve`'s stack in a process of its own (http_server.py) and a load
generator in another (http_load.py), over loopback.

- a trivial endpoint on the same stack (auth, host check, load shedding, routing, the envelope;
  no engine): the ceiling;
- POST one message, by 32 connections at once;
- POST a batch of 100 messages, by 16 connections;
- pull 100 + ack them, by 8 connections, from a queue holding only the window they drain, and
  from the runner's large backlog (runner.py fills it for the worker cases).

The memory engine is left out: the server process would have a memory of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any

import conveyor
from conveyor.bench.conveyor_cases import fill
from conveyor.bench.engines import Storage
from conveyor.bench.modes import Mode
from conveyor.bench.report import EngineResult
from conveyor.processes import stop_with_me

TOKEN = "bench-http-token"
SEND_CONNECTIONS = 32
BATCH_CONNECTIONS = 16
PULL_CONNECTIONS = 8
WARMUP_REQUESTS = 500
TIMEOUT_SECONDS = 900.0


@contextlib.contextmanager
def server(url: str) -> Iterator[int]:
    """The server process on `url`; yields its port, stops it (SIGTERM) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor.bench.http_server", url, TOKEN],
        stdout=subprocess.PIPE,
        text=True,
        **stop_with_me(),
    )
    try:
        stdout: IO[str] | None = process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the HTTP server did not start (exit code {process.wait()})")
        yield int(json.loads(line)["port"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def load(port: int, case: str, queue: str, count: int, connections: int) -> dict[str, Any]:
    """Run the load generator once; its figures."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.bench.http_load",
            str(port),
            TOKEN,
            case,
            queue,
            str(count),
            str(connections),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        **stop_with_me(),
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the HTTP load generator failed: {completed.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    if figures["errors"]:
        raise RuntimeError(f"the HTTP case {case} had {figures['errors']} failed requests")
    return figures


def rate(figures: dict[str, Any], what: str) -> float:
    return float(figures[what]) / float(figures["seconds"])


async def _prepare(url: str, queues: list[str], window: int | None = None, filled: str | None = None) -> None:
    async with conveyor.App(url) as app:
        for name in queues:
            await app.create_queue(name, exist_ok=True)
        if filled is not None and window:
            await fill(app, filled, window)


def measure(
    place: Storage, mode: Mode, repeats: int, result: EngineResult, large_backlog: str | None
) -> None:
    """Every HTTP case, `repeats` times, on one server; `large_backlog` names a queue holding the
    runner's large backlog (pull+ack drains a window of it) or is None."""
    url = place.conveyor_url()
    send_queue, batch_queue, small = (
        place.queue_name(case) for case in ("http-send", "http-batch", "http-pull")
    )
    asyncio.run(_prepare(url, [send_queue, batch_queue, small]))
    with server(url) as port:
        load(port, "ping", send_queue, WARMUP_REQUESTS, SEND_CONNECTIONS)
        for _ in range(repeats):
            result.add(
                "http_ping",
                rate(load(port, "ping", send_queue, mode.http_requests, SEND_CONNECTIONS), "requests"),
            )
            sent = load(port, "send", send_queue, mode.http_requests, SEND_CONNECTIONS)
            result.add("http_send_one", rate(sent, "messages"))
            batches = load(port, "batch", batch_queue, mode.http_batches, BATCH_CONNECTIONS)
            result.add("http_send_batch100", rate(batches, "messages"))
            asyncio.run(_prepare(url, [], mode.http_window, small))
            result.add(
                "http_pull_ack_small",
                rate(load(port, "pull_ack", small, mode.http_window, PULL_CONNECTIONS), "messages"),
            )
            if large_backlog is not None:
                drained = load(port, "pull_ack", large_backlog, mode.http_window, PULL_CONNECTIONS)
                result.add("http_pull_ack_large", rate(drained, "messages"))
