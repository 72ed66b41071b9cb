"""Topics for the CLI, the HTTP API and conveyor.toml: every topic with its subscriptions,
creating a topic with its first subscriptions, deleting one, and the JSON documents of both.

A topic is stored as its subscriptions: it exists while at least one queue subscribes to it, so
creating one names its first subscriptions and deleting one removes them all (the queues and
their messages stay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor import limits as L
from conveyor.admin.documents import iso
from conveyor.app import App
from conveyor.errors import ConveyorValueError, SubscriptionNotFound, TopicNotFound
from conveyor.topics import PublishResult
from conveyor.types import Subscription


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """One subscription to make: `queue` receives the messages whose type is in `types` (any, when None)."""

    queue: str
    types: tuple[str, ...] | None = None


async def every_topic(app: App) -> dict[str, list[Subscription]]:
    """Every topic with its subscriptions, by topic name and then queue name."""
    topics: dict[str, list[Subscription]] = {}
    for subscription in sorted(await app.list_subscriptions(), key=lambda s: (s.topic, s.queue)):
        topics.setdefault(subscription.topic, []).append(subscription)
    return topics


async def one_topic(app: App, name: str) -> list[Subscription]:
    """The subscriptions of topic `name`; TopicNotFound if it has none."""
    subscriptions = sorted(await app.list_subscriptions(name), key=lambda s: s.queue)
    if not subscriptions:
        raise TopicNotFound(name)
    return subscriptions


async def create_topic(
    app: App, name: str, subscriptions: Sequence[SubscriptionRequest]
) -> list[Subscription]:
    """Create topic `name` with its first subscriptions (at least one; missing queues are created
    with default settings). Every name is checked before anything is stored; an existing
    subscription of the same queue gets the new type filter."""
    L.validate_queue_name(name)
    if not subscriptions:
        raise ConveyorValueError(f"topic {name!r} needs at least one subscription queue")
    for request in subscriptions:
        L.validate_queue_name(request.queue)
    for request in subscriptions:
        await subscribe(app, name, request.queue, request.types)
    return await one_topic(app, name)


async def subscribe(app: App, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
    """Subscribe `queue` to `topic`, creating the queue (default settings) if it does not exist,
    whatever the App's auto_create; again, to change the type filter."""
    L.validate_queue_name(topic)
    await app.create_queue(queue, exist_ok=True)
    return await app.subscribe(topic, queue=queue, types=types)


async def delete_topic(app: App, name: str) -> list[Subscription]:
    """Remove every subscription of topic `name` (the queues and their messages stay); returns
    the subscriptions removed. TopicNotFound if it has none."""
    subscriptions = await one_topic(app, name)
    for subscription in subscriptions:
        await app.unsubscribe(name, subscription.queue)
    return subscriptions


async def unsubscribe(app: App, topic: str, queue: str) -> None:
    """Remove the subscription of `queue` to `topic`; SubscriptionNotFound if there was none."""
    if not await app.unsubscribe(topic, queue):
        raise SubscriptionNotFound(topic, queue)


def subscription_document(subscription: Subscription) -> dict[str, Any]:
    """A subscription: its queue, its type filter (None: every type) and when it was made."""
    return {
        "topic": subscription.topic,
        "queue": subscription.queue,
        "types": None if subscription.types is None else list(subscription.types),
        "created_at": iso(subscription.created_at),
    }


def topic_document(name: str, subscriptions: Sequence[Subscription]) -> dict[str, Any]:
    """A topic with its subscriptions."""
    return {"name": name, "subscriptions": [subscription_document(s) for s in subscriptions]}


def publish_document(result: PublishResult) -> dict[str, Any]:
    """What a publish wrote: the message's type and the id of its copy in each queue."""
    return {"topic": result.topic, "type": result.type, "ids": dict(result.ids)}
