"""`conveyor topics …`: create, list, delete topics; subscribe and unsubscribe queues; publish.

A topic is stored as its subscriptions (see conveyor/admin/topics.py): it exists while a queue
subscribes to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from conveyor.admin import (
    SubscriptionRequest,
    create_topic,
    delete_topic,
    every_topic,
    one_topic,
    publish_document,
    subscribe,
    subscription_document,
    topic_document,
    unsubscribe,
)
from conveyor.cli.output import emit_json, out, parse_seconds
from conveyor.cli.send import ContentTypeChoice, read_body
from conveyor.cli.state import current, run
from conveyor.types import ContentType, Subscription

topics = typer.Typer(
    name="topics",
    help="Create, inspect and publish to durable topics (fan-out to queues).",
    no_args_is_help=True,
)

TopicName = Annotated[str, typer.Argument(metavar="TOPIC", help="The topic's name.", show_default=False)]
QueueName = Annotated[
    str, typer.Argument(metavar="QUEUE", help="The subscription queue.", show_default=False)
]
Types = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        "-T",
        help="Copy only messages of this type (repeat for several); default: every type.",
        show_default=False,
    ),
]
Force = Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")]


def register(cli: typer.Typer) -> None:
    cli.add_typer(topics)


def _types(types: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(types) if types else None


def _types_text(subscription: Subscription) -> str:
    return "every type" if subscription.types is None else ", ".join(subscription.types)


def _topics_table(rows: dict[str, list[Subscription]]) -> Table:
    table = Table(title="Topics", title_justify="left")
    table.add_column("topic", style="bold")
    table.add_column("queue")
    table.add_column("types")
    for name, subscriptions in rows.items():
        for number, subscription in enumerate(subscriptions):
            table.add_row(
                Text(name if number == 0 else ""), Text(subscription.queue), Text(_types_text(subscription))
            )
    return table


@topics.command("create")
def create(
    name: TopicName,
    queues: Annotated[
        list[str],
        typer.Option(
            "--queue",
            "-q",
            help="A subscription queue (repeat for several; at least one).",
            show_default=False,
        ),
    ],
    types: Types = None,
) -> None:
    """Create a topic with its first subscription queues (created if missing)."""
    wanted = _types(types)
    requests = [SubscriptionRequest(queue, wanted) for queue in queues]
    subscriptions = run(lambda app: create_topic(app, name, requests))
    if current().json:
        emit_json(topic_document(name, subscriptions))
    else:
        names = ", ".join(repr(s.queue) for s in subscriptions)
        out().print(f"Created topic {name!r}: copies go to {names}.", markup=False, soft_wrap=True)


@topics.command("list")
def list_topics() -> None:
    """Every topic with its subscription queues and their type filters."""
    rows = run(every_topic)
    if current().json:
        emit_json([topic_document(name, subscriptions) for name, subscriptions in rows.items()])
    elif not rows:
        out().print(
            "No topics yet: create one with `conveyor topics create TOPIC --queue QUEUE`.", markup=False
        )
    else:
        out().print(_topics_table(rows))


@topics.command("delete")
def delete(name: TopicName, force: Force = False) -> None:
    """Delete a topic: remove all its subscriptions (the queues and their messages stay)."""
    subscriptions = run(lambda app: one_topic(app, name))
    if not force:
        typer.confirm(
            f"Delete topic {name!r} and its {len(subscriptions)} subscription(s)?", abort=True, err=True
        )
    removed = run(lambda app: delete_topic(app, name))
    if current().json:
        emit_json({"name": name, "deleted": True, "subscriptions": len(removed)})
    else:
        out().print(
            f"Deleted topic {name!r} ({len(removed)} subscription(s); the queues stay).", markup=False
        )


@topics.command("subscribe")
def subscribe_command(topic: TopicName, queue: QueueName, types: Types = None) -> None:
    """Copy the topic's messages into QUEUE (created if missing); again, to change the type filter."""
    subscription = run(lambda app: subscribe(app, topic, queue, _types(types)))
    if current().json:
        emit_json(subscription_document(subscription))
    else:
        out().print(
            f"Subscribed {queue!r} to topic {topic!r} ({_types_text(subscription)}).",
            markup=False,
            soft_wrap=True,
        )


@topics.command("unsubscribe")
def unsubscribe_command(topic: TopicName, queue: QueueName) -> None:
    """Stop copying the topic's messages into QUEUE (the queue and its messages stay)."""
    run(lambda app: unsubscribe(app, topic, queue))
    if current().json:
        emit_json({"topic": topic, "queue": queue, "unsubscribed": True})
    else:
        out().print(f"Unsubscribed {queue!r} from topic {topic!r}.", markup=False)


@topics.command("publish")
def publish(
    topic: TopicName,
    body: Annotated[
        str, typer.Argument(help="The message body; '-' reads it from stdin.", show_default=False)
    ],
    delay: Annotated[
        float | None,
        typer.Option(
            "--delay",
            parser=parse_seconds,
            metavar="DURATION",
            help="Deliver after this long (seconds, or 30s, 5m, 2h, 1d); default: each queue's delay.",
            show_default=False,
        ),
    ] = None,
    content_type: Annotated[
        ContentTypeChoice, typer.Option("--content-type", "-t", help="How to read and store the body.")
    ] = ContentTypeChoice.json,
) -> None:
    """Publish BODY (JSON unless --content-type says otherwise) to every subscription its type matches."""
    kind: ContentType = content_type.value
    value = read_body(body, kind)

    result = run(lambda app: app.topic(topic).publish(value, delay_seconds=delay, content_type=kind))
    if current().json:
        emit_json(publish_document(result))
    elif not result:
        out().print(f"Published to {topic!r}: no subscription matched, nothing stored.", markup=False)
    else:
        queues = ", ".join(repr(queue) for queue in result.queues)
        out().print(f"Published to {topic!r}: copied to {queues}.", markup=False, soft_wrap=True)
