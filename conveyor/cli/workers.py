"""`conveyor workers`: the workers seen recently (their last heartbeats)."""

from __future__ import annotations

import time

import typer
from rich.table import Table
from rich.text import Text

from conveyor import limits as L
from conveyor.admin import recent_workers, worker_document
from conveyor.cli.output import emit_json, out, seconds_text
from conveyor.cli.state import current, run
from conveyor.types import WorkerInfo


def register(cli: typer.Typer) -> None:
    cli.command("workers")(workers)


def workers() -> None:
    """The workers seen in the last 15 s: host, pid, queues, concurrency and last heartbeat."""
    seen = run(recent_workers)
    now = time.time()
    if current().json:
        emit_json([worker_document(worker, now) for worker in seen])
    elif not seen:
        out().print(
            f"No worker seen in the last {L.WORKERS_SEEN_SECONDS:g} s: start one with `conveyor worker`.",
            markup=False,
        )
    else:
        out().print(workers_table(seen, now))


def workers_table(seen: list[WorkerInfo], now: float) -> Table:
    table = Table(title=Text("Workers seen recently"), title_justify="left")
    for column in ("host", "pid", "queues", "concurrency", "last heartbeat", "up"):
        table.add_column(column, justify="right" if column in ("pid", "concurrency") else "left")
    for worker in seen:
        table.add_row(
            worker.host,
            str(worker.pid),
            ", ".join(worker.queues),
            str(worker.concurrency),
            f"{seconds_text(max(0.0, now - worker.seen_at))} ago",
            seconds_text(max(0.0, now - worker.started_at)),
        )
    return table
