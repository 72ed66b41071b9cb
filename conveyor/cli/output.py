"""Rendering for the CLI: rich consoles, JSON documents, human-friendly numbers, and error lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from conveyor.admin import iso
from conveyor.durations import parse_duration
from conveyor.errors import ConveyorError
from conveyor.headers import DEAD_LETTER_PREFIX
from conveyor.producer import PeekedMessage
from conveyor.types import PullConsumer, QueueInfo, QueueSettings, QueueStats

# Shown in a table cell that has no value.
NO_VALUE = "-"

# Errors whose message says it all; any other is likely a bug and is shown with its type.
EXPECTED_ERRORS = (ConveyorError, ValueError, OSError, ImportError)


class CommandError(ConveyorError):
    """A problem with what the user asked for (a bad body, a missing file): one line, exit 1."""

    def __init__(self, message: str, *, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code


# Consoles are made per call so they write to the streams current at that moment (CliRunner swaps them)
# and detect colour support for those streams.
def out() -> Console:
    return Console(highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def progress_bar(label: str, *, enabled: bool = True) -> Progress:
    """A transient progress bar on stderr, shown only to a person at a terminal."""
    console = err()
    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


def emit_json(document: Any, *, compact: bool = False) -> None:
    """Write one JSON document to stdout (compact ones are a line each, for streams)."""
    text = json.dumps(document, separators=(",", ":")) if compact else json.dumps(document, indent=2)
    out().out(text, highlight=False)


def error_line(exc: BaseException) -> str:
    # one line, whatever the message holds; notes add where it happened (the consumer that died)
    message = " ".join(" ".join([str(exc), *(f"({note})" for note in getattr(exc, "__notes__", ()))]).split())
    if isinstance(exc, ConveyorError):
        return f"{message} [{exc.code}]"
    if isinstance(exc, EXPECTED_ERRORS):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message} (run with --debug for the traceback)"


def report_error(exc: BaseException, *, as_json: bool, debug: bool) -> None:
    console = err()
    if debug:
        console.print_exception()
    if as_json:
        code = exc.code if isinstance(exc, ConveyorError) else "error"
        document = {
            "error": {"code": code, "type": type(exc).__name__, "message": " ".join(str(exc).split())}
        }
        console.out(json.dumps(document), highlight=False)
        return
    console.print(Text.assemble(("Error: ", "bold red"), (error_line(exc), "red")), soft_wrap=True)


# -- numbers ----------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    """12.3s, 5m 30s, 2h 5m, 4d — for ages and durations."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value][:2]
    return " ".join(shown)


def bytes_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def parse_seconds(value: str | float) -> float:
    """'90', '90s', '5m', '2h', '4d' → seconds (a typer parser; defaults arrive as numbers); the
    same parser reads conveyor.toml's durations."""
    return parse_duration(value)


# -- queues -----------------------------------------------------------------------------------


def queues_table(rows: Iterable[tuple[QueueInfo, QueueStats]]) -> Table:
    table = Table(title="Queues", title_justify="left")
    table.add_column("queue", style="bold")
    for column in ("backlog", "delayed", "in flight", "oldest", "bytes"):
        table.add_column(column, justify="right")
    table.add_column("paused")
    for info, stats in rows:
        table.add_row(
            Text(info.name),
            f"{stats.backlog:,}",
            f"{stats.delayed:,}",
            f"{stats.in_flight:,}",
            seconds_text(stats.oldest_age_seconds) if stats.total else NO_VALUE,
            bytes_text(stats.bytes),
            Text("paused", style="yellow") if stats.paused else "no",
        )
    return table


def backlog_limit_text(settings: QueueSettings) -> str:
    """A queue's backlog limits as one line ("none" without)."""
    parts = []
    if settings.max_backlog_messages is not None:
        parts.append(f"{settings.max_backlog_messages:,} messages")
    if settings.max_backlog_bytes is not None:
        parts.append(bytes_text(settings.max_backlog_bytes))
    return " or ".join(parts) if parts else "none"


def pull_consumer_text(consumer: PullConsumer | None) -> str:
    if consumer is None:
        return NO_VALUE
    dead_letters = consumer.dead_letter_queue or "none (deleted past its retries)"
    return (
        f"batch size {consumer.batch_size}, {consumer.max_retries} retries, "
        f"retry delay {seconds_text(consumer.retry_delay)}, "
        f"visibility timeout {seconds_text(consumer.visibility_timeout)}, dead-letter queue {dead_letters}"
    )


def queue_info_table(info: QueueInfo, stats: QueueStats) -> Table:
    table = Table(title=Text(f"Queue {info.name}"), title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [
        ("backlog", f"{stats.backlog:,}"),
        ("delayed", f"{stats.delayed:,}"),
        ("in flight", f"{stats.in_flight:,}"),
        ("oldest", seconds_text(stats.oldest_age_seconds) if stats.total else NO_VALUE),
        ("bytes", bytes_text(stats.bytes)),
        ("paused", "yes (sends accepted, no delivery)" if stats.paused else "no"),
        ("delivery delay", seconds_text(info.settings.delivery_delay)),
        ("retention", seconds_text(info.settings.retention_seconds)),
        ("dedup window", seconds_text(info.settings.dedup_window_seconds)),
        ("backlog limit", backlog_limit_text(info.settings)),
        ("pull consumer", pull_consumer_text(info.settings.pull_consumer)),
        ("partitions", str(info.settings.partitions)),
        ("created", iso(info.created_at)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


# -- messages ---------------------------------------------------------------------------------


def preview(body: Any, width: int = 60) -> str:
    if isinstance(body, bytes):
        text = f"<{len(body):,} bytes> {body[:16].hex()}"
    elif isinstance(body, str):
        text = body
    else:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def messages_table(queue: str, messages: list[PeekedMessage], now: float | None = None) -> Table:
    """One row per message; a dead letter's origin and last error go under its body, so the table
    stays readable in 80 columns."""
    now = time.time() if now is None else now
    dead_letters = any(message.dead_letter is not None for message in messages)
    table = Table(title=Text(f"{queue}: {len(messages)} message(s), oldest first"), title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("age", justify="right")
    table.add_column("body / dead letter" if dead_letters else "body", overflow="fold")
    for message in messages:
        body = Text(preview(message.body))
        info = message.dead_letter
        if info is not None:
            body.append(
                f"\nfrom {info.source_queue} after {info.attempts} attempt(s), id {info.original_id}", "dim"
            )
            body.append(f"\n{preview(info.error, 120)}", "red")
        shown = {
            key: value
            for key, value in message.headers.items()
            if info is None or not key.startswith(DEAD_LETTER_PREFIX)  # the lines above say it
        }
        if shown:
            body.append(
                "\n" + preview(", ".join(f"{key}={value}" for key, value in shown.items()), 120), "cyan"
            )
        table.add_row(
            Text(message.id, style="dim" if message.leased else ""),
            str(message.attempts),
            seconds_text(max(0.0, now - message.timestamp.timestamp())),
            body,
        )
    return table
