"""`conveyor queues consumer http add|remove QUEUE`: a queue's HTTP pull consumer settings, with
wrangler's flag names (`wrangler queues consumer http add`)."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor import limits as L
from conveyor.admin import pull_consumer_document
from conveyor.app import App
from conveyor.cli.output import emit_json, out, pull_consumer_text
from conveyor.cli.state import current, run
from conveyor.types import PullConsumer

consumer = typer.Typer(name="consumer", help="A queue's consumer settings.", no_args_is_help=True)
http = typer.Typer(
    name="http",
    help="A queue's HTTP pull consumer: what pulls naming no batch size or lease get, and its retries.",
    no_args_is_help=True,
)
consumer.add_typer(http)

Name = Annotated[str, typer.Argument(help="The queue's name.", show_default=False)]


@http.command("add")
def add(
    name: Name,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", metavar="N", help="Messages a pull naming no batch size gets (1-100)."),
    ] = L.DEFAULT_PULL_BATCH_SIZE,
    message_retries: Annotated[
        int,
        typer.Option(
            "--message-retries",
            metavar="N",
            help="Retries before a pulled message goes to the dead-letter queue (0-100).",
        ),
    ] = L.DEFAULT_MAX_RETRIES,
    retry_delay_secs: Annotated[
        float,
        typer.Option("--retry-delay-secs", metavar="SECONDS", help="How long a retry naming no delay waits."),
    ] = L.DEFAULT_RETRY_DELAY,
    visibility_timeout_secs: Annotated[
        float,
        typer.Option(
            "--visibility-timeout-secs",
            metavar="SECONDS",
            help="The lease of a pull naming none (0.05-43,200).",
        ),
    ] = L.DEFAULT_VISIBILITY_TIMEOUT,
    dead_letter_queue: Annotated[
        str | None,
        typer.Option(
            "--dead-letter-queue",
            metavar="QUEUE",
            help="Where a message past its retries goes (created if missing); none: it is deleted.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Configure the queue's HTTP pull consumer (replacing its settings)."""
    settings = PullConsumer(
        batch_size=batch_size,
        max_retries=message_retries,
        retry_delay=retry_delay_secs,
        visibility_timeout=visibility_timeout_secs,
        dead_letter_queue=dead_letter_queue,
    )

    async def work(app: App) -> PullConsumer | None:
        return (await app.set_pull_consumer(name, settings)).settings.pull_consumer

    stored = run(work)
    assert stored is not None
    if current().json:
        emit_json({"name": name, "pull_consumer": pull_consumer_document(stored)})
    else:
        out().print(
            f"HTTP pull consumer of {name!r}: {pull_consumer_text(stored)}.", markup=False, soft_wrap=True
        )


@http.command("remove")
def remove(name: Name) -> None:
    """Remove the queue's HTTP pull consumer: pulls get the defaults and no retry limit applies."""

    async def work(app: App) -> bool:
        had = (await app.get_queue(name)).settings.pull_consumer is not None
        await app.set_pull_consumer(name, None)
        return had

    had = run(work)
    if current().json:
        emit_json({"name": name, "removed": had})
    elif had:
        out().print(f"Removed the HTTP pull consumer of {name!r}.", markup=False)
    else:
        out().print(f"Queue {name!r} had no HTTP pull consumer.", markup=False)
