"""`conveyor queues …`: create, list, inspect, update, delete, purge, pause and resume queues."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor import limits as L
from conveyor.admin import every_queue, one_queue, queue_document
from conveyor.app import App
from conveyor.cli.output import (
    backlog_limit_text,
    emit_json,
    out,
    parse_seconds,
    queue_info_table,
    queues_table,
    seconds_text,
)
from conveyor.cli.pull_consumer import consumer
from conveyor.cli.state import current, run
from conveyor.types import QueueInfo, QueueStats

queues = typer.Typer(name="queues", help="Create, inspect and manage queues.", no_args_is_help=True)
queues.add_typer(consumer)

Name = Annotated[str, typer.Argument(help="The queue's name.", show_default=False)]
Force = Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")]
DeliveryDelay = Annotated[
    float | None,
    typer.Option(
        "--delivery-delay",
        parser=parse_seconds,
        metavar="DURATION",
        help="Delay every message by this long (seconds, or 30s, 5m, 2h, 1d; at most 1d).",
        show_default=False,
    ),
]
Retention = Annotated[
    float | None,
    typer.Option(
        "--retention",
        parser=parse_seconds,
        metavar="DURATION",
        help="Delete messages older than this (60s to 14d; default 4d).",
        show_default=False,
    ),
]
DedupWindow = Annotated[
    float | None,
    typer.Option(
        "--dedup-window",
        parser=parse_seconds,
        metavar="DURATION",
        help="A send naming a dedup id seen this recently stores nothing (0 to 1d; default 5m; 0: off).",
    ),
]


MaxBacklogMessages = Annotated[
    int | None,
    typer.Option(
        "--max-backlog-messages",
        min=0,
        metavar="N",
        help="Refuse sends (QueueFull) past this many messages held; 0 removes the limit (update).",
        show_default=False,
    ),
]
MaxBacklogBytes = Annotated[
    int | None,
    typer.Option(
        "--max-backlog-bytes",
        min=0,
        metavar="BYTES",
        help="Refuse sends (QueueFull) past this many bytes of bodies held; 0 removes the limit (update).",
        show_default=False,
    ),
]


Partitions = Annotated[
    int,
    typer.Option(
        "--partitions",
        min=1,
        max=L.MAX_PARTITIONS,
        metavar="N",
        help=f"Spread the queue over N partitions (1 to {L.MAX_PARTITIONS}); fixed at creation.",
    ),
]


def register(cli: typer.Typer) -> None:
    cli.add_typer(queues)


def _show(info: QueueInfo, stats: QueueStats, done: str | None = None) -> None:
    if current().json:
        emit_json(queue_document(info, stats))
        return
    if done is not None:
        out().print(done, markup=False, soft_wrap=True)
    else:
        out().print(queue_info_table(info, stats))


def _settings_text(info: QueueInfo) -> str:
    settings = info.settings
    text = (
        f"delivery delay {seconds_text(settings.delivery_delay)}, "
        f"retention {seconds_text(settings.retention_seconds)}, "
        f"dedup window {seconds_text(settings.dedup_window_seconds)}"
    )
    if settings.bounded:
        text += f", backlog limit {backlog_limit_text(settings)}"
    if settings.partitions > 1:
        text += f", {settings.partitions} partitions"
    return text


@queues.command("create")
def create(
    name: Name,
    delivery_delay: DeliveryDelay = None,
    retention: Retention = None,
    dedup_window: DedupWindow = None,
    max_backlog_messages: MaxBacklogMessages = None,
    max_backlog_bytes: MaxBacklogBytes = None,
    partitions: Partitions = L.DEFAULT_PARTITIONS,
) -> None:
    """Create a queue (an error if it exists)."""

    async def work(app: App) -> tuple[QueueInfo, QueueStats]:
        await app.create_queue(
            name,
            delivery_delay=delivery_delay or 0.0,
            retention_seconds=L.DEFAULT_RETENTION_SECONDS if retention is None else retention,
            dedup_window_seconds=L.DEFAULT_DEDUP_WINDOW_SECONDS if dedup_window is None else dedup_window,
            max_backlog_messages=max_backlog_messages or None,
            max_backlog_bytes=max_backlog_bytes or None,
            partitions=partitions,
        )
        return await one_queue(app, name)

    info, stats = run(work)
    _show(info, stats, f"Created queue {name!r} ({_settings_text(info)}).")


@queues.command("list")
def list_queues() -> None:
    """Every queue with its backlog, delayed, in-flight and oldest message."""

    rows = run(every_queue)
    if current().json:
        emit_json([queue_document(info, stats) for info, stats in rows])
    elif not rows:
        out().print("No queues yet: create one with `conveyor queues create NAME`.", markup=False)
    else:
        out().print(queues_table(rows))


@queues.command("info")
def info(name: Name) -> None:
    """One queue's contents and settings."""
    queue_info, stats = run(lambda app: one_queue(app, name))
    _show(queue_info, stats)


@queues.command("update")
def update(
    name: Name,
    delivery_delay: DeliveryDelay = None,
    retention: Retention = None,
    dedup_window: DedupWindow = None,
    max_backlog_messages: MaxBacklogMessages = None,
    max_backlog_bytes: MaxBacklogBytes = None,
) -> None:
    """Change a queue's delivery delay, retention, dedup window or backlog limits."""
    if (delivery_delay, retention, dedup_window, max_backlog_messages, max_backlog_bytes) == (
        None,
        None,
        None,
        None,
        None,
    ):
        raise typer.BadParameter(
            "give --delivery-delay, --retention, --dedup-window, --max-backlog-messages"
            " and/or --max-backlog-bytes"
        )

    async def work(app: App) -> tuple[QueueInfo, QueueStats]:
        await app.update_queue(
            name,
            delivery_delay=delivery_delay,
            retention_seconds=retention,
            dedup_window_seconds=dedup_window,
            max_backlog_messages=max_backlog_messages,
            max_backlog_bytes=max_backlog_bytes,
        )
        return await one_queue(app, name)

    queue_info, stats = run(work)
    _show(queue_info, stats, f"Updated queue {name!r} ({_settings_text(queue_info)}).")


def _confirm(question: str, force: bool) -> None:
    if not force:
        typer.confirm(question, abort=True, err=True)


@queues.command("delete")
def delete(name: Name, force: Force = False) -> None:
    """Delete a queue and every message in it."""
    _, stats = run(lambda app: one_queue(app, name))
    _confirm(f"Delete queue {name!r} and its {stats.total:,} message(s)?", force)
    run(lambda app: app.delete_queue(name))
    if current().json:
        emit_json({"name": name, "deleted": True, "messages": stats.total})
    else:
        out().print(f"Deleted queue {name!r} ({stats.total:,} message(s)).", markup=False)


@queues.command("purge")
def purge(name: Name, force: Force = False) -> None:
    """Delete every message of a queue, keeping the queue."""
    _, stats = run(lambda app: one_queue(app, name))
    _confirm(f"Delete all {stats.total:,} message(s) of queue {name!r}?", force)
    removed = run(lambda app: app.queue(name).purge())
    if current().json:
        emit_json({"name": name, "purged": removed})
    else:
        out().print(f"Purged {removed:,} message(s) from {name!r}.", markup=False)


def _set_paused(name: str, paused: bool) -> None:
    async def work(app: App) -> None:
        queue = app.queue(name)
        await (queue.pause() if paused else queue.resume())

    run(work)
    if current().json:
        emit_json({"name": name, "paused": paused})
    elif paused:
        out().print(f"Paused delivery on {name!r}: sends are still accepted.", markup=False)
    else:
        out().print(f"Resumed delivery on {name!r}.", markup=False)


@queues.command("pause-delivery")
def pause_delivery(name: Name) -> None:
    """Stop delivering a queue's messages (sends are still accepted)."""
    _set_paused(name, True)


@queues.command("resume-delivery")
def resume_delivery(name: Name) -> None:
    """Deliver a paused queue's messages again."""
    _set_paused(name, False)
