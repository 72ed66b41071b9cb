"""The table scenario x engine (rich on the terminal, Markdown for docs) and the JSON document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from reliability.runner import RunResult

# Characters a table printed to a file or pipe may take (a terminal uses its own width).
TABLE_WIDTH = 160
COLUMNS = [
    "scenario",
    "engine",
    "result",
    "sent ok",
    "unknown",
    "failed",
    "completed",
    "lost",
    "dup expl.",
    "dup unexpl.",
    "in DLQ",
    "poison in DLQ",
    "recovery s",
    "run s",
]


def rows(results: Sequence[RunResult]) -> list[list[str]]:
    table = []
    for result in results:
        if result.status == "skip" and result.reason == "n/a":
            continue  # a scenario that does not apply to the engine (e.g. a full disk on Redis)
        figures = result.figures
        if figures is None:
            status = "skip" if result.status == "skip" else "ERROR"
            table.append(
                [
                    result.scenario,
                    result.engine,
                    f"{status}: {result.reason}"[:60],
                    *[""] * (len(COLUMNS) - 4),
                    str(result.seconds),
                ]
            )
            continue
        recovery = "-" if figures.recovery_seconds is None else f"{figures.recovery_seconds:.1f}"
        poison = f"{figures.poison_in_dlq}/{figures.poison}" if figures.poison else "-"
        table.append(
            [
                result.scenario,
                result.engine,
                "pass" if result.status == "pass" else "FAIL",
                f"{figures.sent_ok:,}",
                f"{figures.unknown:,}",
                f"{figures.failed:,}",
                f"{figures.completed:,}",
                f"{figures.lost:,}",
                f"{figures.explained:,}",
                f"{figures.unexplained:,}",
                f"{figures.in_dlq:,}",
                poison,
                recovery,
                f"{result.seconds:.0f}",
            ]
        )
    return table


def print_table(
    results: Sequence[RunResult], engines: Sequence[str], scenarios: Sequence[str], meta: dict[str, Any]
) -> None:
    console = Console(width=None if Console().is_terminal else TABLE_WIDTH)
    table = Table(
        title=f"conveyor reliability ({meta['mode']}, {meta['started_at']}, {meta['duration_seconds']} s)"
    )
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("scenario", "engine", "result") else "right")
    for row in rows(results):
        style = "red" if row[2] != "pass" else None
        table.add_row(*row, style=style)
    console.print(table)
    for result in results:
        if result.violations or result.status == "error":
            console.print(f"[bold]{result.scenario} on {result.engine}[/]: {result.status}")
            for violation in result.violations:
                console.print(f"  - {violation}", markup=False)
            if result.reason:
                console.print(f"  - {result.reason}", markup=False)
            for note in result.notes:
                console.print(f"    note: {note}", markup=False)


def markdown(results: Sequence[RunResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines) + "\n"


def document(results: Sequence[RunResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "runs": [
            {
                "scenario": result.scenario,
                "engine": result.engine,
                "issue": result.issue,
                "status": result.status,
                "seconds": result.seconds,
                "reason": result.reason,
                "figures": None if result.figures is None else result.figures.as_dict(),
                "violations": result.violations,
                "notes": result.notes,
            }
            for result in results
        ],
    }


def write_json(path: Path, results: Sequence[RunResult], meta: dict[str, Any]) -> None:
    """The JSON document at `path` and the same table as Markdown next to it (`.md`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(results, meta), indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
