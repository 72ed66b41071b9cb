"""`conveyor bench` / `python -m conveyor.bench` / `make bench`: run every case on every engine,
print the table, write JSON (and the same table as Markdown) next to it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

import conveyor
from conveyor.bench import conveyor_cases as cases
from conveyor.bench import http_cases, raw, raw_latency, redis_settle, scaling
from conveyor.bench.backlog_worker import work
from conveyor.bench.engines import Engine, Storage, backend_problem, select, service_problem, storage
from conveyor.bench.modes import FULL, MODES, Mode
from conveyor.bench.report import EngineResult, print_report, write
from conveyor.processes import stop_with_me

# Relative to the working directory (`make bench` writes to bench/results/ in the checkout).
DEFAULT_OUTPUT = Path("conveyor-bench") / "latest.json"
BACKLOG_BATCH = 100
WORKER_TIMEOUT_SECONDS = 900.0
# What the HTTP cases' server needs (the http extra); without them those cases are left out.
HTTP_MODULES = ("starlette", "uvicorn")

progress = Console(stderr=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="conveyor bench", description="conveyor's benchmarks: each figure next to its raw ceiling."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: proves it works")
    size.add_argument("--quick", action="store_true", help="usable figures in a few minutes")
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated: memory, sqlite (both synchronous modes), sqlite-full, sqlite-normal, "
        "postgres, redis, nats, nats-r3 (a 3-node cluster started for the run) (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="override the mode's number of repeats")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling suite instead: 1, 2, 4 worker / producer processes per engine and cluster "
        "layout, and each message's CPU cost (`conveyor bench --scaling --help`)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if "--scaling" in arguments:  # a suite of its own (scaling.py): its own targets and options
        return scaling.main(arguments)
    args = parse_args(arguments)
    mode = MODES["smoke"] if args.smoke else MODES["quick"] if args.quick else FULL
    try:
        engines = select(args.engines)
    except ValueError as exc:
        progress.print(f"[red]{exc}[/]")
        return 2
    repeats = args.repeats or mode.repeats
    started = time.time()
    results = [run_engine(engine, mode, repeats) for engine in engines]
    meta = {
        "mode": mode.name,
        "repeats": repeats,
        "sizes": mode.__dict__,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.time() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "conveyor": conveyor.__version__,
        },
    }
    title = f"conveyor bench ({mode.name}, median of {repeats}): value (ratio to its ceiling)"
    print_report(results, title)
    write(results, meta, args.output)
    progress.print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0


def run_engine(engine: Engine, mode: Mode, repeats: int) -> EngineResult:
    result = EngineResult(engine)
    problem = service_problem(engine)
    if problem is not None:
        result.notes.append(f"skipped: {problem}")
        progress.print(f"[yellow]{engine.name}[/]: skipped: {problem}")
        return result
    missing = backend_problem(engine)
    if missing is not None:
        result.notes.append(missing)
        progress.print(f"[yellow]{engine.name}[/]: {missing}")
    try:
        with storage(engine) as place:
            for repeat in range(repeats):
                progress.print(f"{engine.name}: repeat {repeat + 1}/{repeats}")
                for case, rate in raw.measure(place, mode).items():
                    result.add(case, rate)
                for case, delay in raw_latency.measure(place, mode.latency_messages).items():
                    result.add(case, delay)
                if missing is None:
                    run_conveyor_cases(place, mode, result)
            if missing is None:
                large = run_backlog(place, mode, repeats, result)
                run_http(place, mode, repeats, result, large)
    except Exception as exc:  # one broken engine must not cost the others their figures
        result.notes.append(f"failed: {type(exc).__name__}: {exc}")
        progress.print(f"[red]{engine.name} failed[/]: {type(exc).__name__}: {exc}")
    return result


def run_conveyor_cases(place: Storage, mode: Mode, result: EngineResult) -> None:
    url = place.conveyor_url()
    result.add("send_one", asyncio.run(cases.send_one(url, place.queue_name("one"), mode.one_by_one)))
    result.add(
        "send_concurrent100",
        asyncio.run(cases.send_concurrent(url, place.queue_name("concurrent"), mode.concurrent)),
    )
    result.add("send_batch100", asyncio.run(cases.send_batch(url, place.queue_name("batch"), mode.batched)))
    for size in (10, 100):
        rate = asyncio.run(cases.drain(url, place.queue_name(f"drain{size}"), mode.drained, size))
        result.add(f"drain_batch{size}", rate)
    p50, p99 = asyncio.run(cases.latency(url, place.queue_name("latency"), mode.latency_messages))
    result.add("latency_p50_ms", p50)
    result.add("latency_p99_ms", p99)
    if place.engine.kind != "memory":  # a memory engine is private to its process
        latency = cases.latency(url, place.queue_name("xlatency"), mode.latency_messages, other_process=True)
        p50, p99 = asyncio.run(latency)
        result.add("xprocess_latency_p50_ms", p50)
        result.add("xprocess_latency_p99_ms", p99)


def run_backlog(place: Storage, mode: Mode, repeats: int, result: EngineResult) -> str:
    """Worker drain rate and RSS with a backlog of only the window, then with the large backlog;
    returns the large backlog's queue (it still holds `mode.backlog` messages)."""
    url = place.conveyor_url()
    small = place.queue_name("backlog-small")
    large = place.queue_name("backlog-large")
    if place.engine.kind == "memory":
        result.notes.append("the memory engine's backlog cases run in the benchmark's process (RSS holds it)")
        figures = asyncio.run(_memory_backlog(small, large, mode, repeats))
    else:
        figures = []
        for repeat in range(repeats):
            progress.print(f"{place.engine.name}: small backlog {repeat + 1}/{repeats}")
            asyncio.run(_fill(url, small, mode.backlog_window))
            figures.append(("small", *_worker_process(url, small, mode.backlog_window)))
        progress.print(f"{place.engine.name}: filling a backlog of {mode.backlog:,}")
        settles = place.engine.kind == "redis"
        windows = repeats + (1 if settles else 0)
        asyncio.run(_fill(url, large, mode.backlog + windows * mode.backlog_window))
        if settles:
            # the window right after the fill, then the fill's tables settled (redis_settle.py)
            progress.print(f"{place.engine.name}: large backlog, unsettled")
            figures.append(("large_unsettled", *_worker_process(url, large, mode.backlog_window)))
            redis_settle.settle(place.name)
        for repeat in range(repeats):
            progress.print(f"{place.engine.name}: large backlog {repeat + 1}/{repeats}")
            figures.append(("large", *_worker_process(url, large, mode.backlog_window)))
    for size, rate, rss in figures:
        result.add(f"backlog_drain_{size}", rate)
        if size != "large_unsettled":
            result.add(f"backlog_rss_{size}_mb", rss)
    return large


def run_http(place: Storage, mode: Mode, repeats: int, result: EngineResult, large_backlog: str) -> None:
    """The HTTP cases (http_cases.py); pull+ack's large backlog is the one run_backlog left."""
    if place.engine.kind == "memory":
        result.notes.append("no HTTP cases: the server process would have a memory engine of its own")
        return
    missing = [name for name in HTTP_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        result.notes.append(
            f"no HTTP cases: {', '.join(missing)} not installed (pip install 'conveyor[http]')"
        )
        return
    progress.print(f"{place.engine.name}: HTTP cases")
    http_cases.measure(place, mode, repeats, result, large_backlog)


async def _fill(url: str, queue: str, count: int) -> None:
    async with conveyor.App(url) as app:
        await cases.fill(app, queue, count)


async def _memory_backlog(small: str, large: str, mode: Mode, repeats: int) -> list[tuple[str, float, float]]:
    figures: list[tuple[str, float, float]] = []
    async with conveyor.App("memory://") as app:
        for size, queue, backlog in (("small", small, 0), ("large", large, mode.backlog)):
            await cases.fill(app, queue, backlog)
            for _ in range(repeats):
                await cases.fill(app, queue, mode.backlog_window)
                worker_app = conveyor.App(backend=app.backend.sibling())
                done = await work(worker_app, queue, mode.backlog_window, BACKLOG_BATCH)
                figures.append((size, done["rate"], done["rss_mb"]))
    return figures


def _worker_process(url: str, queue: str, count: int) -> tuple[float, float]:
    """Drain `count` messages in a worker process of its own; its rate and peak RSS."""
    completed = subprocess.run(
        [sys.executable, "-m", "conveyor.bench.backlog_worker", url, queue, str(count), str(BACKLOG_BATCH)],
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_SECONDS,
        **stop_with_me(),
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the backlog worker failed: {completed.stderr.strip()[-2000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return float(figures["rate"]), float(figures["rss_mb"])
