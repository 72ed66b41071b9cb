"""The producer handle: `app.queue(name)` → Queue with send, send_batch, pull, stats and management."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from conveyor import limits as L
from conveyor.backends.base import Backend
from conveyor.codec import check_content_type, decode_body, encode_body
from conveyor.core import Core
from conveyor.core.ids import new_message_id, new_message_ids
from conveyor.errors import (
    BatchCountTooLarge,
    BatchTooLarge,
    InvalidContentType,
    MessageValidationError,
)
from conveyor.types import (
    ContentType,
    DeadLetterInfo,
    LeasedMessage,
    OutgoingMessage,
    QueueStats,
    Retry,
    Settlement,
    StoredMessage,
)

# How long past its deadline a long-poll pull is cut off when the engine has not returned by then.
PULL_WAIT_GRACE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message of a `send_batch`, with its own delay, content type and dedup id."""

    body: Any
    delay_seconds: float | None = None
    content_type: ContentType = "json"
    #: stored once per queue within its dedup window (see `Queue.send`)
    dedup_id: str | None = None
    #: ordered message group (see `Queue.send`)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class PeekedMessage:
    """A message looked at without leasing it (`Queue.peek`)."""

    id: str
    body: Any
    content_type: ContentType
    timestamp: dt.datetime
    attempts: int
    leased: bool
    dead_letter: DeadLetterInfo | None
    #: its ordered message group, None when it has none
    group: str | None = None

    @classmethod
    def from_stored(cls, stored: StoredMessage) -> PeekedMessage:
        """Decode an engine's stored row (a body that does not parse is kept as bytes)."""
        return cls(
            id=stored.id,
            body=_decode_or_raw(stored.body, stored.content_type),
            content_type=stored.content_type,
            timestamp=dt.datetime.fromtimestamp(stored.timestamp, dt.UTC),
            attempts=stored.attempts,
            leased=stored.leased,
            dead_letter=stored.dead_letter,
            group=stored.group,
        )


@dataclass(frozen=True, slots=True)
class PulledMessage:
    """A message leased by `Queue.pull`; settle it with `Queue.ack` by its `lease_id`."""

    id: str
    body: Any
    content_type: ContentType
    timestamp: dt.datetime
    attempts: int
    lease_id: str
    dead_letter: DeadLetterInfo | None
    #: its ordered message group, None when it has none
    group: str | None = None

    @classmethod
    def from_leased(cls, leased: LeasedMessage) -> PulledMessage:
        """Decode an engine's leased row (a body that does not parse is kept as bytes)."""
        return cls(
            id=leased.id,
            body=_decode_or_raw(leased.body, leased.content_type),
            content_type=leased.content_type,
            timestamp=dt.datetime.fromtimestamp(leased.timestamp, dt.UTC),
            attempts=leased.attempts,
            lease_id=leased.lease_id,
            dead_letter=leased.dead_letter,
            group=leased.group,
        )


@dataclass(frozen=True, slots=True)
class AckResult:
    """What one `Queue.ack` did: how many acks and retries took effect, and a warning per
    lease id that had expired or was unknown (those changed nothing)."""

    ack_count: int
    retry_count: int
    warnings: list[str] = field(default_factory=list)
    #: the lease ids that were unknown or expired (each has its line in `warnings`)
    stale: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExtendResult:
    """What one `Queue.extend` did: how many leases were pushed out, and a warning per lease
    id that had expired or was unknown (those changed nothing)."""

    extended_count: int
    warnings: list[str] = field(default_factory=list)
    #: the lease ids that were unknown or expired (each has its line in `warnings`)
    stale: list[str] = field(default_factory=list)


def _decode_or_raw(body: bytes, content_type: ContentType) -> Any:
    try:
        return decode_body(body, content_type)
    except ValueError:
        return body  # a body stored by a foreign writer that does not parse: show the bytes


class Queue:
    """A named queue of one App (`app.queue(name)`). Cheap to create; holds no connection of its own."""

    def __init__(self, core: Core, name: str, schema: Any = None) -> None:
        self.core = core
        self.name = L.validate_queue_name(name)
        self.schema = schema
        self._adapter: pydantic.TypeAdapter[Any] | None = (
            None if schema is None else pydantic.TypeAdapter(schema)
        )

    def _on(self, core: Core) -> Queue:
        """This handle on another Core (the sync portal's), sharing the schema's adapter."""
        handle = Queue(core, self.name)
        handle.schema, handle._adapter = self.schema, self._adapter
        return handle

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    # -- sending -----------------------------------------------------------------------------

    def _encode(self, body: Any, content_type: ContentType) -> bytes:
        if self._adapter is not None:
            if content_type != "json":
                raise InvalidContentType(
                    f"queue {self.name!r} has a schema: its bodies are json, not {content_type!r}"
                )
            try:
                value = self._adapter.validate_python(body)
            except pydantic.ValidationError as exc:
                raise MessageValidationError(
                    f"body does not match the schema of queue {self.name!r}: {exc}",
                    exc.errors(include_url=False),
                ) from None
            # by alias: the wire format is what the schema validates (camelCase aliases included)
            data = self._adapter.dump_json(value, by_alias=True)
        else:
            data = encode_body(body, content_type)
        limits = self.core.limits
        if len(data) > limits.max_message_bytes:  # checked inline: this runs for every send
            L.check_message_size(data, limits)
        return data

    def _outgoing(
        self, request: SendRequest, default_delay: float | None, message_id: str
    ) -> OutgoingMessage:
        content_type = check_content_type(request.content_type)
        delay = request.delay_seconds if request.delay_seconds is not None else default_delay
        if delay is not None:
            delay = L.check_delay("delay_seconds", delay, self.core.limits)
        return OutgoingMessage(
            queue=self.name,
            id=message_id,
            body=self._encode(request.body, content_type),
            content_type=content_type,
            delay_seconds=delay,
            dedup_id=L.validate_dedup_id(request.dedup_id),
            group=L.validate_group(request.group),
        )

    async def send(
        self,
        body: Any,
        *,
        delay_seconds: float | None = None,
        content_type: ContentType = "json",
        dedup_id: str | None = None,
        group: str | None = None,
        connection: Any = None,
    ) -> str:
        """Send one message; returns its id once it is durable.

        The body is at most `Limits.max_message_bytes` serialised (default 128,000; else
        MessageTooLarge). `delay_seconds` is 0-86,400; None uses the queue's delivery delay.
        `content_type` is "json" (default), "text" (a str) or "bytes". `dedup_id` (1-128
        printable ASCII characters, no space): a send naming a dedup id the queue saw within
        its dedup window (`dedup_window_seconds`, default 300) stores nothing and returns the
        first message's id. `group` (1-128 printable ASCII characters, no space) names an
        ordered message group: its messages are delivered in send order, one at a time
        (docs/concepts/groups.md). `connection` (an open psycopg AsyncConnection, on PostgreSQL
        only) writes inside the caller's open transaction instead.
        """
        request = SendRequest(body, delay_seconds, content_type, dedup_id, group)
        message = self._outgoing(request, None, new_message_id())
        [stored_as] = await self.core.write([message], connection=connection)
        return stored_as

    async def send_batch(
        self,
        messages: Sequence[Any],
        *,
        delay_seconds: float | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Send up to 100 messages (256 KB in all) atomically; returns their ids in order.

        Items are bodies or `SendRequest`s; a `SendRequest`'s own delay wins over `delay_seconds`.
        A `SendRequest` with a `dedup_id` is deduplicated as in `send` (against earlier sends and
        earlier messages of the batch): its id in the reply is then the first message's.
        """
        outgoing = self._prepare_batch(messages, delay_seconds)
        return await self.core.write(outgoing, connection=connection)

    def _prepare_batch(self, messages: Sequence[Any], delay_seconds: float | None) -> list[OutgoingMessage]:
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise TypeError("send_batch takes a list of bodies or SendRequests")
        limits = self.core.limits
        if len(messages) > limits.max_batch_messages:
            raise BatchCountTooLarge(
                f"batch has {len(messages):,} messages; the limit is {limits.max_batch_messages:,}",
                limit="max_batch_messages",
                value=len(messages),
                maximum=limits.max_batch_messages,
            )
        if delay_seconds is not None:
            delay_seconds = L.check_delay("delay_seconds", delay_seconds, limits)
        ids = new_message_ids(len(messages))
        outgoing = [
            self._outgoing(item, delay_seconds, message_id)
            if isinstance(item, SendRequest)
            # a plain body: json, the batch's delay (already checked)
            else OutgoingMessage(self.name, message_id, self._encode(item, "json"), "json", delay_seconds)
            for item, message_id in zip(messages, ids, strict=True)
        ]
        total = sum(len(message.body) for message in outgoing)
        if total > limits.max_batch_bytes:
            raise BatchTooLarge(
                f"batch is {total:,} bytes; the limit is {limits.max_batch_bytes:,}",
                limit="max_batch_bytes",
                value=total,
                maximum=limits.max_batch_bytes,
            )
        return outgoing

    def send_sync(
        self,
        body: Any,
        *,
        delay_seconds: float | None = None,
        content_type: ContentType = "json",
        dedup_id: str | None = None,
        group: str | None = None,
    ) -> str:
        """Blocking `send` for code with no event loop (Flask, Django, scripts)."""
        return self.core.run_sync(
            lambda core: self._on(core).send(
                body, delay_seconds=delay_seconds, content_type=content_type, dedup_id=dedup_id, group=group
            )
        )

    def send_batch_sync(self, messages: Sequence[Any], *, delay_seconds: float | None = None) -> list[str]:
        """Blocking `send_batch`."""
        return self.core.run_sync(
            lambda core: self._on(core).send_batch(messages, delay_seconds=delay_seconds)
        )

    # -- pull consumers ----------------------------------------------------------------------

    async def pull(
        self,
        batch_size: int = L.DEFAULT_PULL_BATCH_SIZE,
        visibility_timeout: float = L.DEFAULT_VISIBILITY_TIMEOUT,
        *,
        wait: float = 0.0,
    ) -> list[PulledMessage]:
        """Lease up to `batch_size` messages (1-100; default 5) for `visibility_timeout` seconds
        (0.05-43,200; default 30): a pull consumer. Settle them with `ack` before the lease ends.

        `wait` (0-20 s; default 0) makes it a long poll: with nothing visible, the pull waits on
        the engine's wake-up and returns as soon as a message is visible, or empty at the deadline.
        Raises QueuePaused while the queue is paused.
        """
        limits = self.core.limits
        L.check_int_range("batch_size", batch_size, 1, limits.max_batch_size)
        L.check_visibility_timeout(visibility_timeout, limits)
        L.check_pull_wait(wait)
        backend = await self.core.connected()
        leased = await backend.lease_many(self.name, batch_size, visibility_timeout)
        if not leased and wait > 0:
            leased = await self._wait_and_lease(backend, batch_size, visibility_timeout, wait)
        if not leased:
            await self.core.check_not_paused(self.name)
        return [PulledMessage.from_leased(message) for message in leased]

    async def _wait_and_lease(
        self, backend: Backend, batch_size: int, visibility_timeout: float, wait: float
    ) -> list[LeasedMessage]:
        """Wait up to `wait` seconds on the engine's wake-up, leasing as soon as it fires. A
        wake-up that found nothing (another consumer was first) waits again for the time left."""
        await self.core.check_not_paused(self.name)  # a paused queue answers at once, not at the deadline
        await self.core.ensure_queue(self.name)  # a wake-up needs the queue to exist
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # real time bounds the wait even where the engine waits on the app's (fake) clock; a
        # little after the engine's own deadline, so that a lease taken as it wakes is not cut off
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait + PULL_WAIT_GRACE_SECONDS):
                while (remaining := deadline - loop.time()) > 0:
                    leased = await backend.wait_and_lease(
                        self.name, batch_size, visibility_timeout, remaining
                    )
                    if leased:
                        return leased
        return []

    async def extend(
        self, lease_ids: Sequence[str], visibility_timeout: float = L.DEFAULT_VISIBILITY_TIMEOUT
    ) -> ExtendResult:
        """Push the leases of pulled messages to end `visibility_timeout` seconds from now
        (0.05-43,200; default 30), for a consumer that needs longer than it first asked.

        An expired or unknown lease id is reported in `warnings` and changes nothing: its
        message may already be with another consumer.
        """
        if isinstance(lease_ids, str) or not isinstance(lease_ids, Sequence):
            raise TypeError("extend takes a list of lease ids")
        L.check_visibility_timeout(visibility_timeout, self.core.limits)
        unique = list(dict.fromkeys(lease_ids))
        live = await self.core.live_leases(self.name, unique, visibility_timeout)
        stale = [lease_id for lease_id in unique if lease_id not in live]
        warnings = [f"lease {lease_id!r} is unknown or has expired" for lease_id in stale]
        return ExtendResult(len(unique) - len(stale), warnings, stale)

    async def ack(
        self, acks: Sequence[str] = (), retries: Sequence[str | tuple[str, float]] = ()
    ) -> AckResult:
        """Settle pulled messages by lease id: ack them, or retry them (optionally delayed).

        An expired or unknown lease id is reported in `warnings` and changes nothing.
        """
        retry_items: list[Retry] = []
        for item in retries:
            lease_id, delay = (item, 0.0) if isinstance(item, str) else item
            retry_items.append(Retry(lease_id, L.check_delay("delay_seconds", delay, self.core.limits)))
        result = await self.core.settle(self.name, Settlement(acks=list(acks), retries=retry_items))
        warnings = [f"lease {lease_id!r} is unknown or has expired" for lease_id in result.stale]
        return AckResult(result.acked, result.retried, warnings, list(result.stale))

    # -- inspection and management ---------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Backlog, delayed, in-flight, oldest age, bytes and pause state, read from the engine now.

        `QueueNotFound` if the queue does not exist.
        """
        backend = await self.core.connected()
        return await backend.stats(self.name)

    async def peek(self, limit: int = 10) -> list[PeekedMessage]:
        """Look at up to `limit` messages (1-1,000; default 10), oldest visible first, not leased."""
        L.check_int_range("limit", limit, 1, 1_000)
        backend = await self.core.connected()
        return [PeekedMessage.from_stored(stored) for stored in await backend.peek(self.name, limit)]

    async def purge(self) -> int:
        """Delete every message of the queue, leased ones included; returns how many."""
        backend = await self.core.connected()
        return await backend.purge(self.name)

    async def pause(self) -> None:
        """Stop delivery: consumers get nothing and `pull` raises QueuePaused; sends are still accepted."""
        backend = await self.core.connected()
        await backend.set_paused(self.name, True)

    async def resume(self) -> None:
        """Start delivery again after `pause`."""
        backend = await self.core.connected()
        await backend.set_paused(self.name, False)
