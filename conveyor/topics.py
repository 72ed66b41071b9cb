"""Durable topics: publish once, and a copy lands in every subscription queue whose type filter matches.

orders = app.topic("orders")
await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])   # stored in the engine
await orders.publish({"type": "ORDER_UP", "table": 4})             # one atomic write of every copy

A subscription is an ordinary queue: consumers, retries and dead-letter queues work as usual.
Subscriptions are read from the engine for every publish rather than cached, so a subscription
made by another process applies to the very next publish; concurrent publishes to one topic
share reads (see `CoalescedRead`), which never makes what they see staler.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from conveyor import limits as L
from conveyor import tracing
from conveyor.codec import check_content_type, encode_body
from conveyor.core import Core
from conveyor.core.ids import new_message_id
from conveyor.errors import ConveyorValueError
from conveyor.headers import check_headers, check_size
from conveyor.types import ContentType, OutgoingMessage, Subscription

log = logging.getLogger("conveyor.topics")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one `Topic.publish` wrote: `ids` maps each subscription queue to the id of its copy.

    Empty (and falsy) when no subscription matched the message's type.
    """

    topic: str
    type: str | None
    ids: dict[str, str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def queues(self) -> list[str]:
        """The subscription queues that received a copy."""
        return list(self.ids)


class Topic:
    """A durable topic of one App (`app.topic(name)`); its counters cover this process only.

    `published` counts successful publishes, `unrouted` those no subscription matched (not an
    error: the message is simply not stored), `copies` the messages written to subscription queues.
    """

    def __init__(self, core: Core, name: str) -> None:
        self.core = core
        self.name = L.validate_queue_name(name)
        self.published = 0
        self.unrouted = 0
        self.copies = 0
        self._read_subscriptions = CoalescedRead(self._fetch_subscriptions)
        self._sync_topic: Topic | None = None  # this topic on the sync portal's Core

    def __repr__(self) -> str:
        return f"Topic({self.name!r})"

    async def _fetch_subscriptions(self) -> list[Subscription]:
        backend = await self.core.connected()
        return await backend.list_subscriptions(self.name)

    async def publish(
        self,
        body: Any,
        *,
        delay_seconds: float | None = None,
        content_type: ContentType = "json",
        headers: Mapping[str, str] | None = None,
        connection: Any = None,
    ) -> PublishResult:
        """Write one copy of `body` into every subscription queue that matches its type, all or none.

        The type is `body["type"]` for a mapping, else the body's `type` attribute (a pydantic
        model's); a body without one matches only subscriptions with no type filter. Every copy
        carries `headers` (checked as in `Queue.send`). Returns once every copy is durable.
        `connection` (PostgreSQL only) writes inside the caller's transaction.
        """
        result = await publish(
            self.core,
            self.name,
            self._read_subscriptions,
            body,
            delay_seconds,
            content_type,
            connection,
            headers,
        )
        self._count(result)
        return result

    def publish_sync(
        self,
        body: Any,
        *,
        delay_seconds: float | None = None,
        content_type: ContentType = "json",
        headers: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Blocking `publish` for code with no event loop (Flask, Django, scripts)."""
        result = self.core.run_sync(
            lambda core: self._on(core).publish(
                body, delay_seconds=delay_seconds, content_type=content_type, headers=headers
            )
        )
        self._count(result)
        return result

    def _on(self, core: Core) -> Topic:
        """This topic on the sync portal's Core (one, so concurrent blocking publishes share reads)."""
        if self._sync_topic is None or self._sync_topic.core is not core:
            self._sync_topic = Topic(core, self.name)
        return self._sync_topic

    async def subscribe(self, queue: str, *, types: Sequence[str] | None = None) -> Subscription:
        """Copy every later publish whose type is in `types` (any type when None, or `["*"]`) into
        `queue`. Stored in the engine, so it survives restarts and applies to every process;
        subscribing again replaces the type filter. Creates the queue when the App's
        `auto_create` is on (else `QueueNotFound`)."""
        return await subscribe(self.core, self.name, queue, types)

    async def unsubscribe(self, queue: str) -> bool:
        """Stop copying into `queue` (the queue and its messages stay); False if it was not subscribed."""
        return await unsubscribe(self.core, self.name, queue)

    async def subscriptions(self) -> list[Subscription]:
        """This topic's subscriptions, read from the engine."""
        return await list_subscriptions(self.core, self.name)

    def _count(self, result: PublishResult) -> None:
        self.published += 1
        self.copies += len(result)
        if not result:
            self.unrouted += 1


def message_type(body: Any) -> str | None:
    """The `type` a topic routes `body` by, or None when it has none."""
    value = body.get("type") if isinstance(body, Mapping) else getattr(body, "type", None)
    if isinstance(value, enum.Enum):
        value = value.value
    return value if isinstance(value, str) else None


async def publish(
    core: Core,
    topic: str,
    read_subscriptions: Callable[[], Awaitable[list[Subscription]]],
    body: Any,
    delay_seconds: float | None,
    content_type: ContentType,
    connection: Any,
    headers: Mapping[str, str] | None = None,
) -> PublishResult:
    span = tracing.send_span(topic) if tracing.AVAILABLE else None
    if span is None:
        return await _publish(
            core, topic, read_subscriptions, body, delay_seconds, content_type, connection, headers
        )
    with tracing.running(span):  # headers that are not a mapping are refused with InvalidHeaders
        return await _publish(
            core,
            topic,
            read_subscriptions,
            body,
            delay_seconds,
            content_type,
            connection,
            tracing.inject(span, headers),
        )


async def _publish(
    core: Core,
    topic: str,
    read_subscriptions: Callable[[], Awaitable[list[Subscription]]],
    body: Any,
    delay_seconds: float | None,
    content_type: ContentType,
    connection: Any,
    headers: Mapping[str, str] | None,
) -> PublishResult:
    content_type = check_content_type(content_type)
    checked = check_headers(headers, core.limits)
    if connection is not None:
        core.transactional()  # refused at once on other engines, even when nothing matches
    if delay_seconds is not None:
        delay_seconds = L.check_delay("delay_seconds", delay_seconds, core.limits)
    data = L.check_message_size(encode_body(body, content_type), core.limits)
    if checked is not None:
        check_size(data, checked, core.limits)
    kind = message_type(body) if content_type == "json" else None
    matching = [s for s in await read_subscriptions() if s.matches(kind)]
    if not matching:
        log.debug("topic %s: no subscription matches type %r; nothing written", topic, kind)
        return PublishResult(topic, kind, {})
    copies = [
        OutgoingMessage(
            queue=subscription.queue,
            id=new_message_id(),
            body=data,
            content_type=content_type,
            delay_seconds=delay_seconds,
            headers=checked,
        )
        for subscription in matching
    ]
    # One engine write for every copy (send_many is atomic across queues); concurrent publishes
    # and sends are group-committed together, and a missing queue is created when auto_create is on.
    await core.write(copies, connection=connection)
    log.debug("topic %s: %r copied to %d queue(s)", topic, kind, len(copies))
    return PublishResult(topic, kind, {copy.queue: copy.id for copy in copies})


async def subscribe(core: Core, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
    """Store the subscription in the engine, creating `queue` first (QueueNotFound when auto_create
    is off and it does not exist). Subscribing again replaces the type filter."""
    L.validate_queue_name(topic)
    L.validate_queue_name(queue)
    wanted = normalize_types(types)
    await core.ensure_queue(queue)
    backend = await core.connected()
    return await backend.add_subscription(topic, queue, wanted)


async def unsubscribe(core: Core, topic: str, queue: str) -> bool:
    """Remove the subscription (the queue and its messages stay); False if there was none."""
    L.validate_queue_name(topic)
    L.validate_queue_name(queue)
    backend = await core.connected()
    return await backend.remove_subscription(topic, queue)


async def list_subscriptions(core: Core, topic: str | None) -> list[Subscription]:
    if topic is not None:
        L.validate_queue_name(topic)
    backend = await core.connected()
    return await backend.list_subscriptions(topic)


class CoalescedRead(Generic[T]):
    """Concurrent callers share reads, yet each gets a read that started after it asked.

    Group commit for reads: while a read is under way, callers wait for the next one, which
    starts as soon as it ends and serves all of them. So N concurrent publishes cost about two
    reads, and none sees subscriptions older than a read of its own would have shown.
    """

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._running: asyncio.Task[T] | None = None
        self._queued: asyncio.Task[T] | None = None

    async def __call__(self) -> T:
        if self._running is None:
            task = self._running = asyncio.create_task(self._run(None))
            task.add_done_callback(self._finished)
        elif self._queued is None:
            task = self._queued = asyncio.create_task(self._run(self._running))
            task.add_done_callback(self._finished)
        else:
            task = self._queued
        # shield: a caller that gives up must not cancel the read the others wait for
        return await asyncio.shield(task)

    async def _run(self, previous: asyncio.Task[T] | None) -> T:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome belongs to its own callers
        return await self._read()

    def _finished(self, task: asyncio.Task[T]) -> None:
        if self._running is task:
            # promote the queued read; callers arriving from now on queue behind it
            self._running, self._queued = self._queued, None


def normalize_types(types: Sequence[str] | None) -> tuple[str, ...] | None:
    """A subscription's type filter: None (or one "*") means every message, types without one included."""
    if types is None:
        return None
    if isinstance(types, str | bytes) or not isinstance(types, Sequence):
        raise TypeError(f"types takes a list of message types, got {types!r}")
    if not types:
        raise ConveyorValueError(
            'types is empty, so nothing would match: pass None (or ["*"]) for every type'
        )
    for kind in types:
        if not isinstance(kind, str) or not kind:
            raise ConveyorValueError(f"a message type is a non-empty str, got {kind!r}")
    if "*" in types:
        return None
    return tuple(sorted(set(types)))


__all__ = ["PublishResult", "Topic", "message_type"]
