"""`conveyor schedules list [APP]`: the schedules a worker would run (from `module:app` and/or
conveyor.toml's [[schedules]]), each with its next runs. It reads no engine: the times are what
the schedules say from now."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from conveyor import limits as L
from conveyor.cli.output import emit_json, out, seconds_text
from conveyor.cli.state import current
from conveyor.cli.worker import build_app
from conveyor.schedules import Schedule

schedules = typer.Typer(name="schedules", help="The schedules workers run.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    cli.add_typer(schedules)


@schedules.command("list")
def list_schedules(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="APP",
            help="module:attribute of a conveyor.App. Default: `app` in conveyor.toml, and its "
            "\\[\\[schedules]].",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        int, typer.Option("--next", "-n", min=1, max=100, help="How many next runs to show.")
    ] = L.SCHEDULE_NEXT_RUNS,
) -> None:
    """Show every schedule: its queue, cron expression or interval, time zone and next runs."""
    state = current()
    app, _ = build_app(state, state.config(), target)
    now = time.time()
    documents = [_document(schedule, schedule.next_ticks(now, runs)) for schedule in app.schedules]
    if state.json:
        emit_json(documents)
    elif not documents:
        out().print("No schedules.", markup=False)
    else:
        out().print(_table(app.schedules, documents))


def _document(schedule: Schedule, ticks: list[float]) -> dict[str, object]:
    zone = schedule.zone()
    return {
        "name": schedule.name,
        "queue": schedule.queue,
        "cron": schedule.cron,
        "every_seconds": schedule.every,
        "tz": schedule.tz,
        "catch_up_seconds": schedule.catch_up_seconds,
        "body": schedule.body,
        "next_runs": [datetime.fromtimestamp(tick, zone).isoformat() for tick in ticks],
        "next_runs_utc": [datetime.fromtimestamp(tick, UTC).isoformat() for tick in ticks],
    }


def _table(items: list[Schedule], documents: list[dict[str, object]]) -> Table:
    table = Table(title="Schedules", title_justify="left")
    for column in ("schedule", "queue", "when", "time zone", "catch-up", "next runs"):
        table.add_column(column, style="bold" if column == "schedule" else None)
    for schedule, document in zip(items, documents, strict=True):
        runs = document["next_runs"]
        assert isinstance(runs, list)
        table.add_row(
            Text(schedule.name),
            Text(schedule.queue),
            Text(schedule.timing),
            Text(schedule.tz),
            seconds_text(schedule.catch_up_seconds),
            Text("\n".join(run.replace("T", " ") for run in runs)),
        )
    return table
