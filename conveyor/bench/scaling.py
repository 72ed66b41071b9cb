"""`conveyor bench --scaling`: throughput with 1, 2 and 4 worker (or producer) processes on each
target (scaling_targets.py), and what each message costs in CPU on the engine and on the client,
so that the capacity of a bigger machine or cluster can be calculated (docs/scale.md).

Every point is a fresh queue. Drain: the parent fills it, starts N worker processes
(scaling_worker.py), waits until each has opened its App, says `go`, and polls the queue's stats
until it is empty; the rate is the messages over that time. Produce: N processes each
`send_batch` their share; the rate is the messages over the time from `go` to the last one's end.
The table shows the median of the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import conveyor
from conveyor.bench import conveyor_cases as cases
from conveyor.bench.body import click
from conveyor.bench.modes import BULK
from conveyor.bench.scaling_targets import (
    TARGETS,
    Meter,
    Place,
    Target,
    running,
    select_targets,
    target_problem,
)
from conveyor.processes import stop_with_me

DEFAULT_OUTPUT = Path("conveyor-bench") / "scaling.json"
# how often the parent asks whether the drained queue is empty (the rate's resolution)
POLL_SECONDS = 0.02
# how long a worker may take to open its App, and a point to finish, before the run gives up
READY_TIMEOUT_SECONDS = 60.0
POINT_TIMEOUT_SECONDS = 300.0
DRAIN_BATCH = 100
CASES = ("drain", "produce")

progress = Console(stderr=True)


@dataclass(frozen=True)
class ScalingMode:
    name: str
    #: messages drained (and sent) at every point
    messages: int
    repeats: int
    #: the worker / producer process counts measured
    processes: tuple[int, ...]


SCALING_MODES = {
    mode.name: mode
    for mode in (
        ScalingMode("smoke", 400, 1, (1, 2)),
        ScalingMode("quick", 8_000, 1, (1, 2, 4)),
        ScalingMode("full", 20_000, 3, (1, 2, 4)),
    )
}


@dataclass
class Point:
    """Every repeat of one case at one process count (and partition count) on one target."""

    case: str
    processes: int
    partitions: int
    samples: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [sample[key] for sample in self.samples if key in sample]
        return statistics.median(values) if values else None


@dataclass
class TargetResult:
    target: Target
    points: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="conveyor bench --scaling",
        description="Throughput with 1, 2 and 4 worker and producer processes on each engine and "
        "cluster layout, and the CPU each message costs the engine and the client.",
    )
    parser.add_argument("--scaling", action="store_true", help="(selects this suite)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: proves it works")
    size.add_argument("--quick", action="store_true", help="one repeat of a smaller run")
    parser.add_argument(
        "--engines", default=None, help=f"comma-separated, of: {', '.join(TARGETS)} (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="override the mode's number of repeats")
    parser.add_argument(
        "--processes", default=None, help="comma-separated process counts (default: the mode's, 1,2,4)"
    )
    parser.add_argument(
        "--partitions",
        default="1",
        help="comma-separated partition counts, e.g. 1,8 (>1 needs create_queue(partitions=...))",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    return parser.parse_args(argv)


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1:
        raise ValueError(f"expected positive counts like 1,2,4, got {text!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = SCALING_MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    try:
        targets = select_targets(args.engines)
        processes = _counts(args.processes) if args.processes else mode.processes
        partitions = _counts(args.partitions)
    except ValueError as exc:
        progress.print(f"[red]{exc}[/]")
        return 2
    repeats = args.repeats or mode.repeats
    started = time.time()
    load_before = os.getloadavg()
    results = [run_target(target, mode.messages, repeats, processes, partitions) for target in targets]
    meta = {
        "suite": "scaling",
        "mode": mode.name,
        "messages": mode.messages,
        "repeats": repeats,
        "processes": list(processes),
        "partitions": list(partitions),
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.time() - started, 1),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "conveyor": conveyor.__version__,
        },
    }
    print_table(results, f"conveyor bench --scaling ({mode.name}, median of {repeats})")
    write(results, meta, args.output)
    progress.print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0


def run_target(
    target: Target, messages: int, repeats: int, processes: Sequence[int], partitions: Sequence[int]
) -> TargetResult:
    result = TargetResult(target)
    problem = target_problem(target)
    if problem is not None:
        result.notes.append(f"skipped: {problem}")
        progress.print(f"[yellow]{target.name}[/]: skipped: {problem}")
        return result
    try:
        with running(target) as place:
            result.notes.append(f"load average at start: {os.getloadavg()[0]:.2f}")
            for parts in partitions:
                if parts > 1 and not asyncio.run(_supports_partitions(place.url)):
                    result.notes.append(f"partitions={parts}: this conveyor's create_queue has no partitions")
                    continue
                for case in CASES:
                    for count in processes:
                        point = Point(case, count, parts)
                        for repeat in range(repeats):
                            progress.print(
                                f"{target.name}: {case}, {count} process(es), {parts} partition(s), "
                                f"repeat {repeat + 1}/{repeats}"
                            )
                            measure = drain_point if case == "drain" else produce_point
                            point.samples.append(measure(place, count, messages, parts))
                        result.points.append(point)
    except Exception as exc:  # one broken target must not cost the others their figures
        result.notes.append(f"failed: {type(exc).__name__}: {exc}")
        progress.print(f"[red]{target.name} failed[/]: {type(exc).__name__}: {exc}")
    return result


# -- one point -----------------------------------------------------------------------------


async def _supports_partitions(url: str) -> bool:
    """Whether the installed conveyor's create_queue takes `partitions=` (the partitioned-queue
    feature); the probe queue is deleted again."""
    async with conveyor.App(url) as app:
        probe = f"scaling-probe-{os.getpid()}"
        try:
            await app.create_queue(probe, partitions=2)  # type: ignore[call-arg,unused-ignore]
        except TypeError:
            return False
        await app.delete_queue(probe)
        return True


async def _create(url: str, queue: str, partitions: int, fill: int) -> None:
    async with conveyor.App(url) as app:
        if partitions > 1:
            await app.create_queue(queue, partitions=partitions)  # type: ignore[call-arg,unused-ignore]
            handle = app.queue(queue)  # through the producer: it spreads messages over the partitions
            for start in range(0, fill, BULK):
                await handle.send_batch([click(n) for n in range(start, min(start + BULK, fill))])
        else:
            await app.create_queue(queue)
            await cases.fill(app, queue, fill)


async def _delete(url: str, queue: str) -> None:
    async with conveyor.App(url) as app:
        await app.delete_queue(queue)


class Worker:
    """One scaling_worker process, spoken to by lines on stdin and stdout; stderr goes to a file
    (not a pipe: a worker that logs a lot must not block on a full pipe), read if it fails."""

    def __init__(self, args: list[str]) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by _close
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conveyor.bench.scaling_worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            **stop_with_me(),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def say(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def line(self, timeout: float) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            self.close()
            self.errors.seek(0)
            raise RuntimeError(f"a scaling worker failed: {self.errors.read().strip()[-2000:]}")
        return line.strip()

    def close(self) -> None:
        """Wait for the process to end (killed if it does not within the timeout); close its pipes."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=READY_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _say(workers: Sequence[Worker], word: str) -> None:
    for worker in workers:
        worker.say(word)


def _results(workers: Sequence[Worker]) -> list[dict[str, float]]:
    return [json.loads(worker.line(POINT_TIMEOUT_SECONDS)) for worker in workers]


def _close(workers: Sequence[Worker]) -> None:
    for worker in workers:
        worker.close()  # end of input stops a worker that was not told to
        worker.errors.close()


def _costs(messages: int, clients: list[dict[str, float]], engine: dict[str, float]) -> dict[str, float]:
    """CPU microseconds a message on each side and, on Redis, the commands a message takes
    (`INFO commandstats`: scripts and the commands inside them) and their recorded microseconds
    (a script's time includes its commands', so this adds some twice: the CPU figure is the one
    to plan with); on a cluster, the busiest server's share of the engine's CPU (how far the work
    spread over the servers)."""
    figures = {"client_cpu_us_per_msg": sum(c["cpu_seconds"] for c in clients) * 1e6 / messages}
    if "engine_cpu_seconds" in engine:
        figures["engine_cpu_us_per_msg"] = engine["engine_cpu_seconds"] * 1e6 / messages
    if "engine_busiest_server_share" in engine:
        figures["engine_busiest_server_share"] = engine["engine_busiest_server_share"]
    if "engine_calls" in engine:
        figures["engine_calls_per_msg"] = engine["engine_calls"] / messages
        figures["engine_usec_per_msg"] = engine["engine_usec"] / messages
    return figures


def drain_point(place: Place, processes: int, messages: int, partitions: int) -> dict[str, float]:
    """`processes` workers drain `messages` together; msg/s from go to an empty queue."""
    queue = f"scaling-drain-{processes}-{time.monotonic_ns()}"
    asyncio.run(_create(place.url, queue, partitions, messages))
    workers: list[Worker] = []
    try:
        workers += [Worker(["drain", place.url, queue, str(DRAIN_BATCH)]) for _ in range(processes)]
        for worker in workers:
            worker.line(READY_TIMEOUT_SECONDS)
        meter = Meter(place, [worker.pid for worker in workers])
        meter.start()
        elapsed = asyncio.run(_until_empty(place.url, queue, workers))
        engine = meter.stop()
        _say(workers, "stop")
        clients = _results(workers)
    finally:
        _close(workers)
    handled = sum(int(client["handled"]) for client in clients)
    if handled < messages:
        raise RuntimeError(f"the workers handled {handled} of {messages} messages")
    asyncio.run(_delete(place.url, queue))
    return {"rate": messages / elapsed, **_costs(messages, clients, engine)}


async def _until_empty(url: str, queue: str, workers: Sequence[Worker]) -> float:
    async with conveyor.App(url) as app:
        handle = app.queue(queue)
        started = time.monotonic()
        _say(workers, "go")
        deadline = started + POINT_TIMEOUT_SECONDS
        while (await handle.stats()).total > 0:
            if time.monotonic() > deadline or not all(worker.running for worker in workers):
                raise RuntimeError(f"the queue was not drained within {POINT_TIMEOUT_SECONDS:.0f} s")
            await asyncio.sleep(POLL_SECONDS)
        return time.monotonic() - started


def produce_point(place: Place, processes: int, messages: int, partitions: int) -> dict[str, float]:
    """`processes` producers send `messages` together in batches of 100; msg/s from go to the last."""
    queue = f"scaling-produce-{processes}-{time.monotonic_ns()}"
    asyncio.run(_create(place.url, queue, partitions, 0))
    share = messages // processes
    workers: list[Worker] = []
    try:
        for index in range(processes):
            workers.append(Worker(["produce", place.url, queue, str(share), str(index * share)]))
        for worker in workers:
            worker.line(READY_TIMEOUT_SECONDS)
        meter = Meter(place, [worker.pid for worker in workers])
        meter.start()
        started = time.monotonic()
        _say(workers, "go")
        clients = _results(workers)
        engine = meter.stop()  # while the workers still hold their connections (PostgreSQL backends)
        _say(workers, "stop")
    finally:
        _close(workers)
    asyncio.run(_delete(place.url, queue))
    sent = share * processes
    elapsed = max(client["finished"] for client in clients) - started
    return {"rate": sent / elapsed, **_costs(sent, clients, engine)}


# -- report --------------------------------------------------------------------------------


def rows(results: Sequence[TargetResult]) -> list[list[str]]:
    """One row per target, case and partition count: the rate at each process count, then the
    per-message costs at one process (no contention between the processes)."""
    table: list[list[str]] = []
    counts = sorted({point.processes for result in results for point in result.points})
    for result in results:
        if not result.points:
            table.append([result.target.name, "; ".join(result.notes), *[""] * (len(counts) + 4)])
            continue
        keys = sorted({(point.case, point.partitions) for point in result.points}, key=lambda k: (k[1], k[0]))
        for case, parts in keys:
            points = {p.processes: p for p in result.points if p.case == case and p.partitions == parts}
            label = case if parts == 1 else f"{case}, {parts} partitions"
            rates = [_number(points[n].median("rate"), "/s") if n in points else "" for n in counts]
            first = points[min(points)]
            scale = ""
            if len(points) > 1:
                top = points[max(points)].median("rate")
                base = first.median("rate")
                if top is not None and base:
                    scale = f"{top / base:.2f}x"
            table.append(
                [
                    result.target.name,
                    label,
                    *rates,
                    scale,
                    _number(first.median("engine_cpu_us_per_msg"), ""),
                    _number(first.median("client_cpu_us_per_msg"), ""),
                    _number(first.median("engine_calls_per_msg"), "", 2),
                ]
            )
    return table


def headers(results: Sequence[TargetResult]) -> list[str]:
    counts = sorted({point.processes for result in results for point in result.points})
    return [
        "target",
        "case",
        *[f"{n} process{'es' if n > 1 else ''}" for n in counts],
        "most / one",
        "engine CPU µs/msg",
        "client CPU µs/msg",
        "Redis commands/msg",
    ]


def _number(value: float | None, unit: str, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def print_table(results: Sequence[TargetResult], title: str) -> None:
    table = Table(title=title)
    for header in headers(results):
        table.add_column(header, justify="left" if header in ("target", "case") else "right")
    for row in rows(results):
        table.add_row(*row)
    Console(width=max(Console().width, 160)).print(table)


def markdown(results: Sequence[TargetResult]) -> str:
    head = headers(results)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines) + "\n"


def write(results: Sequence[TargetResult], meta: dict[str, Any], output: Path) -> None:
    document = {
        **meta,
        "targets": {
            result.target.name: {
                "target": asdict(result.target),
                "notes": result.notes,
                "points": [
                    {
                        "case": point.case,
                        "processes": point.processes,
                        "partitions": point.partitions,
                        "median": {key: point.median(key) for key in (point.samples or [{}])[0]},
                        "samples": point.samples,
                    }
                    for point in result.points
                ],
            }
            for result in results
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
