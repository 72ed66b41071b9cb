"""`conveyor top`: a live view of every queue, refreshed every second until Ctrl-C.

Rates are net rates from successive stats samples (see conveyor/admin/overview.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conveyor import admin
from conveyor.admin import Sample, net_rates, queue_document
from conveyor.app import App
from conveyor.cli.config import ConveyorConfig
from conveyor.cli.output import NO_VALUE, emit_json, out, seconds_text
from conveyor.cli.state import current, run
from conveyor.types import QueueInfo, QueueStats


@dataclass(frozen=True, slots=True)
class Row:
    info: QueueInfo
    stats: QueueStats
    dead_letter_queue: str | None
    dead_letters: int | None
    send_rate: float | None
    ack_rate: float | None

    def document(self) -> dict[str, Any]:
        """The queue's document (as `conveyor queues list --json`), with its DLQ and rates."""
        return queue_document(self.info, self.stats) | {
            "dead_letter_queue": self.dead_letter_queue,
            "dead_letters": self.dead_letters,
            "send_rate": self.send_rate,
            "ack_rate": self.ack_rate,
        }


def register(cli: typer.Typer) -> None:
    cli.command("top")(top)


def dead_letter_queues(names: list[str], config: ConveyorConfig | None) -> dict[str, str]:
    """queue -> its dead-letter queue: a consumer's dead_letter_queue in conveyor.toml, else `<q>-dlq`."""
    declared = {} if config is None else {c.queue: c.dead_letter_queue for c in config.consumers}
    return admin.dead_letter_queues(names, {q: d for q, d in declared.items() if d is not None})


def rows(
    previous: Sample | None, sample: Sample, infos: dict[str, QueueInfo], dlqs: dict[str, str]
) -> list[Row]:
    result = []
    for name, stats in sample.stats.items():
        send_rate, ack_rate = net_rates(previous, sample, name)
        dlq = dlqs.get(name)
        dlq_stats = sample.stats.get(dlq) if dlq is not None else None
        dead_letters = None if dlq_stats is None else dlq_stats.total
        result.append(Row(infos[name], stats, dlq, dead_letters, send_rate, ack_rate))
    return result


def _rate(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:,.1f}"


def render(table_rows: list[Row], url: str, interval: float) -> Group:
    table = Table(title_justify="left", expand=False)
    table.add_column("queue", style="bold")
    for column in ("backlog", "delayed", "in flight", "oldest", "DLQ", "send/s", "ack/s"):
        table.add_column(column, justify="right")
    for row in table_rows:
        s = row.stats
        table.add_row(
            Text.assemble(s.queue, (" paused", "yellow") if s.paused else ""),
            f"{s.backlog:,}",
            f"{s.delayed:,}",
            f"{s.in_flight:,}",
            seconds_text(s.oldest_age_seconds) if s.total else NO_VALUE,
            NO_VALUE
            if row.dead_letters is None
            else Text(f"{row.dead_letters:,}", style="red" if row.dead_letters else ""),
            _rate(row.send_rate),
            _rate(row.ack_rate),
        )
    clock = dt.datetime.now().strftime("%H:%M:%S")
    header = Text.assemble(
        ("conveyor top", "bold"), f" · {url} · {clock} · every {interval:g}s · Ctrl-C ends"
    )
    footer = Text(
        "send/s and ack/s: net growth and shrinking of each queue's total between samples (lower bounds).",
        style="dim",
    )
    return Group(header, table, footer)


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Live backlog, in flight, delayed, dead letters and rates of every queue."""
    state = current()
    config = state.config()

    async def sample(app: App) -> tuple[Sample, dict[str, QueueInfo]]:
        queues = await admin.every_queue(app)
        stats = {info.name: stats for info, stats in queues}
        return Sample(time.monotonic(), stats), {info.name: info for info, _ in queues}

    async def watch(app: App) -> None:
        previous: Sample | None = None
        with contextlib.ExitStack() as stack:
            live = None
            if not (once or state.json):
                live = stack.enter_context(Live(console=out(), auto_refresh=False))
            while True:
                latest, infos = await sample(app)
                table_rows = rows(previous, latest, infos, dead_letter_queues(list(latest.stats), config))
                if state.json:
                    document = {"time": time.time(), "queues": [row.document() for row in table_rows]}
                    emit_json(document, compact=True)
                elif live is None:
                    out().print(render(table_rows, app.url, interval))
                else:
                    live.update(render(table_rows, app.url, interval), refresh=True)
                if once:
                    return
                previous = latest
                await asyncio.sleep(interval)

    run(watch)  # Ctrl-C ends it: one line and exit code 130, as every command
