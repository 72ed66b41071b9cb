"""The main job: seed, start the service and a worker, drive a burst of visits, summarise, serve.

Everything runs on embedded SQLite under `.conveyor/linkclicks/` (reset at each run): the queue
in `queue.db` (conveyor's), the links and clicks in `store.db` (the application's). The service
(uvicorn) and the worker are separate processes, as they would be in production; this process
plays the visitors through real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import sys
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

import conveyor
from conveyor.demo.analytics import percentile
from conveyor.demo.consumer import DEAD_LETTER_QUEUE, QUEUE
from conveyor.demo.seed import Visit, seed, visits
from conveyor.demo.store import Store, open_store
from conveyor.processes import stop_with_me

DEFAULT_DIR = Path(".conveyor/linkclicks")
DEFAULT_PORT = 8000
DEFAULT_VISITS = 1_500
DEFAULT_CONCURRENCY = 8
# Visits per second while the page is being served after the burst (so the page keeps moving).
TRICKLE_PER_SECOND = 4.0
# Upper bounds on waiting; a healthy run takes a fraction of them.
STARTUP_TIMEOUT = 20.0
STORED_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_SECONDS = 0.05
SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")
# A click that breaks the schema (country is not a country code, fields missing): the consumer's
# router dead-letters it, which the summary shows.
MALFORMED_CLICK = {"type": "LINK_CLICK", "data": {"id": "spring-sale", "country": "Narnia"}}

console = Console(highlight=False)


@dataclass
class Burst:
    latencies: list[float] = field(default_factory=list)
    #: the service's own time per redirect, from its Server-Timing header
    server_times: list[float] = field(default_factory=list)
    redirects: int = 0
    not_found: int = 0
    wrong: int = 0  # redirected somewhere other than the visitor's destination
    failed: int = 0
    elapsed: float = 0.0


class PortInUse(Exception):
    """The demo's port is taken (often by an earlier demo still running); nothing was created."""


def free_port(port: int) -> int:
    """`port` if it is free on loopback (0: any free port); PortInUse if it is taken. A taken port
    is an error rather than another port: an open tab would otherwise keep showing the old demo."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: a port left in TIME_WAIT by an earlier run is free, a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror or exc}; an earlier demo still "
                "running?): stop what holds it, or pass --port N (0 for any free port)"
            ) from None
        return int(probe.getsockname()[1])


async def spawn(*args: str) -> Process:
    """`python -m conveyor.demo ARGS`, in its own session so that Ctrl-C reaches only this
    process, which then stops the children in order; a child also stops by itself when this
    process ends any other way (SIGKILL included: conveyor/processes.py)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor.demo", *args, start_new_session=True, **stop_with_me()
    )


async def stop(process: Process, name: str) -> None:
    """SIGTERM (a graceful shutdown: the service flushes its pending sends), SIGKILL if it hangs."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        console.print(f"[yellow]{name} did not stop in {STOP_TIMEOUT:.0f} s; killing it[/]")
        process.kill()
        await process.wait()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll `condition` (a database query) until it holds or `timeout` passes; True if it held."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


async def wait_ready(client: httpx.AsyncClient, service: Process) -> None:
    async def answers() -> bool:
        if service.returncode is not None:
            raise RuntimeError(f"the service exited with code {service.returncode} while starting")
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    if not await until(answers, STARTUP_TIMEOUT):
        raise TimeoutError(f"the service did not answer /healthz within {STARTUP_TIMEOUT:.0f} s")


async def visit(client: httpx.AsyncClient, planned: Visit, burst: Burst) -> None:
    started = time.perf_counter()
    try:
        response = await client.get(planned.path, headers=planned.headers)
    except httpx.HTTPError:
        burst.failed += 1
        return
    burst.latencies.append(time.perf_counter() - started)
    if response.status_code == 302:
        burst.redirects += 1
        timing = SERVER_TIMING.search(response.headers.get("server-timing", ""))
        if timing:
            burst.server_times.append(float(timing.group(1)) / 1000)
        burst.wrong += response.headers.get("location") != planned.expected
    elif response.status_code == 404:
        burst.not_found += 1
    else:
        burst.failed += 1


async def drive(client: httpx.AsyncClient, planned: Sequence[Visit], concurrency: int) -> Burst:
    """Play `planned` with `concurrency` visitors at a time, as fast as the service answers."""
    burst = Burst()
    todo = iter(planned)

    async def visitor() -> None:
        for item in todo:  # the visitors share one iterator: each visit is played once
            await visit(client, item, burst)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(visitor())
    burst.elapsed = time.perf_counter() - started
    return burst


async def wait_stored(store: Store, clicks: int, misses: int) -> bool:
    """Wait until the store holds `clicks` clicks and `misses` misses."""

    async def stored() -> bool:
        totals = await store.totals()
        return totals["clicks"] >= clicks and totals["misses"] >= misses

    return await until(stored, STORED_TIMEOUT)


async def wait_dead_letters(dead_letters: conveyor.Queue, count: int) -> int:
    async def arrived() -> bool:
        return (await dead_letters.stats()).total >= count

    await until(arrived, STORED_TIMEOUT)
    return (await dead_letters.stats()).total


def reset(directory: Path) -> None:
    """A fresh start: the demo's SQLite files from an earlier run are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db*"):
        stale.unlink()


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def summary(burst: Burst, stored: Counts, delays: list[float], concurrency: int) -> Table:
    rate = len(burst.latencies) / burst.elapsed if burst.elapsed else 0.0
    table = Table(title="link-click demo", show_header=False, title_style="bold")
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    table.add_row("clicks sent (302)", f"{burst.redirects:,}")
    table.add_row("rows stored in link_clicks", f"{stored.clicks:,}")
    table.add_row("unknown links (404) / rows in link_misses", f"{burst.not_found:,} / {stored.misses:,}")
    table.add_row("wrong destinations / failed requests", f"{burst.wrong:,} / {burst.failed:,}")
    table.add_row("malformed events dead-lettered", f"{stored.dead:,}")
    table.add_row("burst", f"{burst.elapsed:.2f} s, {rate:,.0f} req/s, {concurrency} at a time")
    table.add_row(
        "redirect latency (round trip) p50 / p99",
        f"{_ms(percentile(burst.latencies, 50))} / {_ms(percentile(burst.latencies, 99))}",
    )
    table.add_row(
        "  of which in the service p50 / p99",
        f"{_ms(percentile(burst.server_times, 50))} / {_ms(percentile(burst.server_times, 99))}",
    )
    table.add_row("click → row p50 / p99", f"{_ms(percentile(delays, 50))} / {_ms(percentile(delays, 99))}")
    return table


async def trickle(client: httpx.AsyncClient) -> None:
    """A few visits a second, forever: the page has something to show while it is open."""
    rng = random.Random()
    burst = Burst()
    while True:
        await visit(client, visits(1, rng=rng)[0], burst)
        await asyncio.sleep(rng.expovariate(TRICKLE_PER_SECOND))


@contextlib.asynccontextmanager
async def running(queue_url: str, store_url: str, port: int) -> AsyncIterator[Process]:
    """The service and the worker (yields the service), stopped in that order on exit so that the
    service's pending sends are flushed while the worker still runs."""
    common = ("--queue-url", queue_url, "--store-url", store_url, "--log-level", "error")
    worker = await spawn("worker", *common)
    service = None
    try:
        service = await spawn("serve", *common, "--port", str(port))
        yield service
    finally:
        if service is not None:
            await stop(service, "the service")
        await stop(worker, "the worker")


@dataclass(frozen=True)
class Counts:
    clicks: int
    misses: int
    dead: int

    @classmethod
    async def now(cls, store: Store, dead_letters: conveyor.Queue) -> Counts:
        totals = await store.totals()
        return cls(totals["clicks"], totals["misses"], (await dead_letters.stats()).total)


async def run(
    *,
    directory: Path = DEFAULT_DIR,
    queue_url: str | None = None,
    store_url: str | None = None,
    port: int = DEFAULT_PORT,
    count: int = DEFAULT_VISITS,
    concurrency: int = DEFAULT_CONCURRENCY,
    once: bool = False,
) -> Burst:
    """The demo. The queue and the store default to fresh SQLite files in `directory`; given URLs
    (PostgreSQL, say) are used as they are, and the summary counts only this run's rows."""
    port = free_port(port)  # before anything is created
    await asyncio.to_thread(reset, directory)
    queue_url = queue_url or f"sqlite:///{(directory / 'queue.db').resolve()}"
    store_url = store_url or f"sqlite:///{(directory / 'store.db').resolve()}"
    store = open_store(store_url)
    await store.open()
    base_url = f"http://127.0.0.1:{port}"
    try:
        await seed(store)
        async with (
            conveyor.App(queue_url) as app,
            running(queue_url, store_url, port) as service,
            httpx.AsyncClient(
                base_url=base_url,
                timeout=10.0,
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            ) as client,
        ):
            dead_letters = app.queue(DEAD_LETTER_QUEUE)
            await app.ensure_queue(DEAD_LETTER_QUEUE)
            await wait_ready(client, service)
            before = await Counts.now(store, dead_letters)
            console.print(f"service on {base_url}; {count:,} visits, {concurrency} at a time ...")
            started = time.time()
            burst = await drive(client, visits(count), concurrency)
            await app.queue(QUEUE).send(MALFORMED_CLICK)  # no schema on this handle: it goes in as is
            await wait_stored(store, before.clicks + burst.redirects, before.misses + burst.not_found)
            await wait_dead_letters(dead_letters, before.dead + 1)
            after = await Counts.now(store, dead_letters)
            delays = await store.click_delays(since=started)
            stored = Counts(
                after.clicks - before.clicks, after.misses - before.misses, after.dead - before.dead
            )
            console.print(summary(burst, stored, delays, concurrency))
            if not once:
                console.print(f"\nAnalytics: [bold underline]{base_url}/analytics[/]  (Ctrl-C to stop)")
                await trickle(client)
        return burst
    finally:
        await store.close()
