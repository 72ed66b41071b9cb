"""`python -m reliability` / `make reliability`: run fault scenarios on engines, check each run's
ledger, print the table scenario x engine, write JSON. Exit 1 when any run breaks a rule."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from reliability import scenarios as registry
from reliability.checker import Figures, check
from reliability.engines import Engine, select
from reliability.ledger import Ledger
from reliability.report import print_table, write_json
from reliability.scenarios.base import DRAIN_SECONDS, Context, Scenario
from reliability.servers import OwnServer

# On top of a scenario's budget and drain: set-up, the checker, stopping processes.
RUN_MARGIN_SECONDS = 90.0

progress = Console(stderr=True)


@dataclass
class RunResult:
    scenario: str
    engine: str
    #: "pass", "fail" (a rule broken), "error" (the run itself failed) or "skip"
    status: str
    figures: Figures | None = None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: str = ""
    #: what the scenario exercises in the issues
    issue: str = ""

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "skip")


async def run_one(
    scenario: Scenario, engine: Engine, *, quick: bool, directory: Path, keep: bool = False
) -> RunResult:
    """One scenario on one engine, from its own storage to the checker's verdict."""
    problem = scenario.problem(engine) or engine.problem()
    if problem is not None:
        return RunResult(scenario.name, engine.name, "skip", reason=problem, issue=scenario.issue)
    run_dir = directory / f"{scenario.name}-{engine.name}"
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    server: OwnServer | None = None
    context: Context | None = None
    result: RunResult
    try:
        if scenario.own_server:
            server = engine.own_server(run_dir / "server")
            await asyncio.to_thread(server.prepare)
            await asyncio.to_thread(server.start)
        url = engine.isolated_url(run_dir, None if server is None else server.url)
        context = Context(scenario, engine, run_dir, url, quick=quick, server=server)
        drain = scenario.drain or (DRAIN_SECONDS[True], DRAIN_SECONDS[False])
        limit = scenario.budget[0 if quick else 1] + drain[0 if quick else 1] + RUN_MARGIN_SECONDS
        async with asyncio.timeout(limit):
            await scenario.body(context)
            await context.drain()
            final = await context.final_state()
        verdict = check(Ledger.read(context.ledger_dir), final, context.expectations())
        violations = context.violations + verdict.violations
        result = RunResult(
            scenario.name,
            engine.name,
            "fail" if violations else "pass",
            verdict.figures,
            violations,
            context.notes + verdict.notes,
        )
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        notes = [] if context is None else context.notes
        result = RunResult(scenario.name, engine.name, "error", notes=notes, reason=detail)
        if os.environ.get("RELIABILITY_TRACEBACK"):
            traceback.print_exc()
    finally:
        if context is not None:
            await context.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
            server.discard()
        elif context is not None:
            await engine.cleanup(context.url)
    result.seconds = round(time.monotonic() - started, 1)
    result.issue = scenario.issue
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


async def run_all(
    scenarios: Sequence[Scenario], engines: Sequence[Engine], *, quick: bool, directory: Path, keep: bool
) -> list[RunResult]:
    results = []
    for scenario in scenarios:
        for engine in engines:
            progress.print(f"[dim]{scenario.name} on {engine.name} ...[/]")
            result = await run_one(scenario, engine, quick=quick, directory=directory, keep=keep)
            colour = {"pass": "green", "fail": "red", "error": "red", "skip": "yellow"}[result.status]
            summary = "; ".join(result.violations) or result.reason
            progress.print(f"  [{colour}]{result.status}[/] in {result.seconds} s {summary}", markup=True)
            results.append(result)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reliability",
        description="conveyor's fault harness: every message handled or dead-lettered, under every fault.",
    )
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated names (sqlite, postgres, redis, nats) or URLs (default: all four)",
    )
    parser.add_argument(
        "--scenarios", default=None, help=f"comma-separated (default: all): {', '.join(registry.BY_NAME)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short faults: minutes, not tens"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory (ledger, logs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        engines = select(args.engines)
        scenarios = registry.select(args.scenarios)
    except ValueError as exc:
        progress.print(f"[red]{exc}[/]")
        return 2
    directory = Path(tempfile.mkdtemp(prefix="conveyor-reliability-"))
    started = time.time()
    try:
        results = asyncio.run(
            run_all(scenarios, engines, quick=args.quick, directory=directory, keep=args.keep)
        )
    finally:
        if args.keep:
            progress.print(f"run directories kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    meta = {
        "mode": "quick" if args.quick else "full",
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.time() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    print_table(results, [engine.name for engine in engines], [s.name for s in scenarios], meta)
    if args.json is not None:
        write_json(args.json, results, meta)
    return 0 if all(result.passed for result in results) else 1
