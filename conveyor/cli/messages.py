"""`conveyor messages peek|delete|replay`: look at messages without leasing them, delete one by id,
redrive dead letters."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from conveyor import admin
from conveyor.app import App
from conveyor.cli.output import emit_json, messages_table, out, progress_bar
from conveyor.cli.state import current, run
from conveyor.errors import MessageNotFound
from conveyor.producer import PeekedMessage

messages = typer.Typer(
    name="messages", help="Inspect messages and replay dead letters.", no_args_is_help=True
)


def register(cli: typer.Typer) -> None:
    cli.add_typer(messages)


@messages.command("peek")
def peek(
    queue: Annotated[str, typer.Argument(help="The queue (often a dead-letter queue).", show_default=False)],
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1_000, help="How many messages, oldest first.")
    ] = 10,
) -> None:
    """Show messages without leasing them: attempts, age, body, and where dead letters came from."""

    async def work(app: App) -> list[PeekedMessage]:
        await app.get_queue(queue)
        return await app.queue(queue).peek(limit)

    found = run(work)
    now = time.time()
    if current().json:
        emit_json([admin.message_document(message) for message in found])
    elif not found:
        out().print(f"Queue {queue!r} is empty.", markup=False)
    else:
        out().print(messages_table(queue, found, now))


@messages.command("delete")
def delete(
    queue: Annotated[str, typer.Argument(help="The queue (a dead-letter queue too).", show_default=False)],
    message_id: Annotated[
        str, typer.Argument(help="The message's id (as send printed it).", show_default=False)
    ],
) -> None:
    """Delete one message by id; it is never delivered. A message a consumer holds is refused."""
    if not run(lambda app: app.queue(queue).delete(message_id)):
        raise MessageNotFound(queue, message_id)
    if current().json:
        emit_json({"queue": queue, "id": message_id, "deleted": True})
    else:
        out().print(f"Deleted message {message_id} from {queue!r}.", markup=False)


@messages.command("replay")
def replay(
    dead_letter_queue: Annotated[str, typer.Argument(help="The dead-letter queue.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="The queue to move them to.", show_default=False)],
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Move at most this many (default: all).", show_default=False),
    ] = None,
) -> None:
    """Move dead letters back to a queue: they keep body and content type and start again at attempt 1."""
    as_json = current().json

    async def work(app: App) -> int:
        await app.get_queue(to)
        total = await admin.movable(app, dead_letter_queue, limit)
        progress = progress_bar("replaying", enabled=not as_json)
        with progress:
            task = progress.add_task("replay", total=total)
            return await admin.replay(
                app,
                dead_letter_queue,
                to,
                limit,
                progress=lambda moved: progress.update(task, completed=moved),
            )

    moved = run(work)
    if as_json:
        emit_json({"from": dead_letter_queue, "to": to, "replayed": moved})
    else:
        out().print(f"Replayed {moved:,} message(s) from {dead_letter_queue!r} to {to!r}.", markup=False)
