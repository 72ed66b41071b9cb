"""Figures → ratios to their ceilings, targets, a rich table, Markdown and JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from conveyor.bench.engines import Engine


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    unit: str
    #: the case this one is divided by for its ratio
    baseline: str | None = None
    #: the ratio must be at least this (throughput) ...
    min_ratio: float | None = None
    #: ... or at most this (memory)
    max_ratio: float | None = None
    #: a latency case held to its engine's `latency_target_ms`
    latency_target: bool = False
    #: the value must be at least this on the engines of `value_kinds` (an absolute target) ...
    min_value: float | None = None
    #: ... or at most this (an absolute latency target)
    max_value: float | None = None
    value_kinds: tuple[str, ...] = ()


CASES = [
    Case("raw_insert_one", "raw: insert one by one", "msg/s"),
    Case("raw_insert_batch100", "raw: insert batches of 100", "msg/s"),
    Case("raw_drain_batch100", "raw: drain by 100", "msg/s"),
    Case("raw_latency_p50_ms", "raw: latency p50 @100 msg/s", "ms"),
    Case("raw_latency_p99_ms", "raw: latency p99 @100 msg/s", "ms"),
    Case("send_one", "send, one by one", "msg/s", "raw_insert_one"),
    Case("send_concurrent100", "send, 100 concurrent tasks", "msg/s", "raw_insert_one", min_ratio=1.0),
    Case("send_batch100", "send_batch of 100", "msg/s", "raw_insert_batch100", min_ratio=0.5),
    Case("drain_batch10", "drain, batch 10", "msg/s", "raw_drain_batch100", min_ratio=0.3),
    Case("drain_batch100", "drain, batch 100", "msg/s", "raw_drain_batch100", min_ratio=0.5),
    Case("latency_p50_ms", "latency p50 @100 msg/s", "ms", "raw_latency_p50_ms", latency_target=True),
    Case("latency_p99_ms", "latency p99 @100 msg/s", "ms", "raw_latency_p99_ms"),
    Case(
        "xprocess_latency_p50_ms",
        "latency p50, producer in another process",
        "ms",
        "raw_latency_p50_ms",
        max_value=2,
        value_kinds=("sqlite",),
    ),
    Case(
        "xprocess_latency_p99_ms",
        "latency p99, producer in another process",
        "ms",
        "raw_latency_p99_ms",
        max_value=10,
        value_kinds=("sqlite",),
    ),
    Case("backlog_drain_small", "worker drain, small backlog", "msg/s"),
    Case("backlog_drain_large", "worker drain, large backlog", "msg/s", "backlog_drain_small", min_ratio=0.8),
    Case(
        "backlog_drain_large_unsettled",
        "worker drain, large backlog before it settled",
        "msg/s",
        "backlog_drain_small",
    ),
    Case("backlog_rss_small_mb", "worker RSS, small backlog", "MB"),
    Case("backlog_rss_large_mb", "worker RSS, large backlog", "MB", "backlog_rss_small_mb", max_ratio=1.2),
    Case("http_ping", "HTTP: trivial endpoint (no engine)", "req/s"),
    Case("http_send_one", "HTTP: POST one message", "msg/s", "http_ping", min_ratio=0.5),
    Case(
        "http_send_batch100",
        "HTTP: POST batches of 100",
        "msg/s",
        min_value=20_000,
        value_kinds=("sqlite",),
    ),
    Case(
        "http_pull_ack_small",
        "HTTP: pull 100 + ack, small backlog",
        "msg/s",
        min_value=20_000,
        value_kinds=("sqlite",),
    ),
    Case(
        "http_pull_ack_large",
        "HTTP: pull 100 + ack, large backlog",
        "msg/s",
        "http_pull_ack_small",
        min_ratio=0.8,
    ),
]
CASE_NAMES = [case.name for case in CASES]


class EngineResult:
    """Every sample of every case on one engine, and why any part was skipped."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.samples: dict[str, list[float]] = {}
        self.notes: list[str] = []

    def add(self, case: str, value: float) -> None:
        self.samples.setdefault(case, []).append(value)

    def value(self, case: str) -> float | None:
        samples = self.samples.get(case)
        return statistics.median(samples) if samples else None

    def ratio(self, case: Case) -> float | None:
        value = self.value(case.name)
        base = None if case.baseline is None else self.value(case.baseline)
        return None if value is None or not base else value / base

    def verdict(self, case: Case) -> bool | None:
        """True/False when the case has a target on this engine, None when it has none."""
        if case.latency_target:
            value, target = self.value(case.name), self.engine.latency_target_ms
            return None if value is None or target is None else value <= target
        if case.min_value is not None:
            value = self.value(case.name)
            if value is None or self.engine.kind not in case.value_kinds:
                return None
            return value >= case.min_value
        if case.max_value is not None:
            value = self.value(case.name)
            if value is None or self.engine.kind not in case.value_kinds:
                return None
            return value <= case.max_value
        ratio = self.ratio(case)
        if ratio is None:
            return None
        if case.min_ratio is not None:
            return ratio >= case.min_ratio
        if case.max_ratio is not None:
            return ratio <= case.max_ratio
        return None

    def to_json(self) -> dict[str, Any]:
        cases: dict[str, Any] = {}
        for case in CASES:
            if case.name not in self.samples:
                continue
            cases[case.name] = {
                "value": self.value(case.name),
                "unit": case.unit,
                "samples": self.samples[case.name],
                "baseline": case.baseline,
                "ratio": self.ratio(case),
                "target": target_text(case, self.engine),
                "meets_target": self.verdict(case),
            }
        return {"kind": self.engine.kind, "notes": self.notes, "cases": cases}


def target_text(case: Case, engine: Engine) -> str | None:
    if case.min_value is not None:
        return _limit_text(">=", case, engine)
    if case.max_value is not None:
        return _limit_text("<=", case, engine)
    if case.latency_target:
        return None if engine.latency_target_ms is None else f"<= {engine.latency_target_ms:g} ms"
    if case.min_ratio is not None:
        return f">= {case.min_ratio:g}x {case.baseline}"
    if case.max_ratio is not None:
        return f"<= {case.max_ratio:g}x {case.baseline}"
    return None


def _limit_text(sign: str, case: Case, engine: Engine) -> str | None:
    limit = case.min_value if sign == ">=" else case.max_value
    if limit is None or engine.kind not in case.value_kinds:
        return None
    return f"{sign} {limit:,.0f} {case.unit}"


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:,.0f}/s"


def cell(result: EngineResult, case: Case, *, markdown: bool = False) -> str:
    value = result.value(case.name)
    if value is None:
        return "—"
    text = _number(value, case.unit)
    ratio = result.ratio(case)
    if ratio is not None:
        text += f" ({ratio:.2f}x)"
    verdict = result.verdict(case)
    if verdict is not None:
        mark = "✓" if verdict else "✗"
        text += f" {mark}" if markdown else (" [green]✓[/]" if verdict else " [red]✗[/]")
    return text


def _target_column(case: Case) -> str:
    if case.min_value is not None:
        return f"≥ {case.min_value:,.0f} {case.unit} on {', '.join(case.value_kinds)}"
    if case.max_value is not None:
        return f"≤ {case.max_value:,.0f} {case.unit} on {', '.join(case.value_kinds)}"
    if case.latency_target:
        return "SQLite ≤ 5, PG ≤ 2, Redis ≤ 1 ms"
    if case.min_ratio is not None:
        return f"≥ {case.min_ratio:g}x {case.baseline}"
    if case.max_ratio is not None:
        return f"≤ {case.max_ratio:g}x {case.baseline}"
    return ""


def table(results: list[EngineResult], title: str) -> Table:
    grid = Table(title=title, show_lines=False)
    grid.add_column("case")
    grid.add_column("target", style="dim")
    for result in results:
        grid.add_column(result.engine.name, justify="right")
    for case in CASES:
        grid.add_row(case.label, _target_column(case), *(cell(result, case) for result in results))
    return grid


def markdown(results: list[EngineResult]) -> str:
    head = ["case", "target", *(result.engine.name for result in results)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in CASES:
        cells = [case.label, _target_column(case), *(cell(r, case, markdown=True) for r in results)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.engine.name}: {note}" for r in results for note in r.notes]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def print_report(results: list[EngineResult], title: str, console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(results, title))
    for result in results:
        for note in result.notes:
            console.print(f"[yellow]{result.engine.name}[/]: {note}")


def write(results: list[EngineResult], meta: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**meta, "engines": {result.engine.name: result.to_json() for result in results}}
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
