"""The producer handle: `app.queue(name)` → Queue with send, send_batch, pull, stats and management."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from conveyor import limits as L
from conveyor import tracing
from conveyor.backends.base import Backend
from conveyor.codec import check_content_type, decode_body, encode_body
from conveyor.core import Core
from conveyor.core.bound import past_bound, unfinished_reason
from conveyor.core.ids import new_message_id, new_message_ids
from conveyor.errors import (
    BatchCountTooLarge,
    BatchTooLarge,
    InvalidContentType,
    MessageValidationError,
)
from conveyor.headers import check_headers, check_size, headers_size
from conveyor.types import (
    ContentType,
    DeadLetter,
    DeadLetterInfo,
    LeasedMessage,
    OutgoingMessage,
    PullConsumer,
    QueueSettings,
    QueueStats,
    Retry,
    Settlement,
    SettleResult,
    StoredMessage,
)

# How long past its deadline a long-poll pull is cut off when the engine has not returned by then.
PULL_WAIT_GRACE_SECONDS = 1.0
# The error of a pulled message retried past its pull consumer's max_retries.
PULL_RETRIED_REASON = "retried by the pull consumer past its max_retries"
# A pulled message's lease id, when its queue has a pull consumer, carries the delivery's attempt
# number after this separator (no engine's lease id holds it): an ack's retry then knows, without
# a read, whether it is past max_retries. A client that edits it only changes its own message's
# fate, which it settles anyway.
ATTEMPTS_TAG = "~"

log = logging.getLogger("conveyor.pull")


def tag(lease_id: str, attempts: int) -> str:
    """A pulled message's lease id with its delivery's attempt number."""
    return f"{lease_id}{ATTEMPTS_TAG}{attempts}"


def untag(lease_id: str) -> tuple[str, int | None]:
    """The engine's lease id and the attempt number a tagged lease id carries (None: untagged)."""
    engine_id, separator, attempts = lease_id.rpartition(ATTEMPTS_TAG)
    if not separator or not (attempts.isascii() and attempts.isdigit()) or len(attempts) > 6:
        return lease_id, None
    return engine_id, int(attempts)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message of a `send_batch`, with its own delay, content type and dedup id."""

    body: Any
    delay_seconds: float | None = None
    content_type: ContentType = "json"
    #: stored once per queue within its dedup window (see `Queue.send`)
    dedup_id: str | None = None
    #: string keys and values the handler reads as `message.headers` (see `Queue.send`)
    headers: Mapping[str, str] | None = None
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
    #: the message's headers (empty when it has none)
    headers: dict[str, str] = field(default_factory=dict)
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
            headers=dict(stored.headers or {}),
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
    #: the message's headers (empty when it has none)
    headers: dict[str, str] = field(default_factory=dict)
    #: its ordered message group, None when it has none
    group: str | None = None

    @classmethod
    def from_leased(cls, leased: LeasedMessage, *, tagged: bool = False) -> PulledMessage:
        """Decode an engine's leased row (a body that does not parse is kept as bytes); `tagged`
        puts its attempts in the lease id (see `tag`)."""
        return cls(
            id=leased.id,
            body=_decode_or_raw(leased.body, leased.content_type),
            content_type=leased.content_type,
            timestamp=dt.datetime.fromtimestamp(leased.timestamp, dt.UTC),
            attempts=leased.attempts,
            lease_id=tag(leased.lease_id, leased.attempts) if tagged else leased.lease_id,
            dead_letter=leased.dead_letter,
            headers=dict(leased.headers or {}),
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
    #: retries that went to the dead-letter queue, past the pull consumer's max_retries
    dead_letter_count: int = 0


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
        delay = request.delay_seconds if request.delay_seconds is not None else default_delay
        return self._message(
            request.body,
            delay,
            request.content_type,
            request.dedup_id,
            request.headers,
            request.group,
            message_id,
        )

    def _message(
        self,
        body: Any,
        delay: float | None,
        content_type: object,
        dedup_id: object,
        headers: object,
        group: object,
        message_id: str,
    ) -> OutgoingMessage:
        """The message to store, every part checked (a send builds no SendRequest: it cost a
        microsecond a send)."""
        content_type = check_content_type(content_type)
        if delay is not None:
            delay = L.check_delay("delay_seconds", delay, self.core.limits)
        checked_headers = check_headers(headers, self.core.limits)
        data = self._encode(body, content_type)
        if checked_headers is not None:
            check_size(data, checked_headers, self.core.limits)
        return OutgoingMessage(
            self.name,
            message_id,
            data,
            content_type,
            delay,
            None,
            L.validate_dedup_id(dedup_id),
            checked_headers,
            L.validate_group(group),
        )

    async def send(
        self,
        body: Any,
        *,
        delay_seconds: float | None = None,
        content_type: ContentType = "json",
        dedup_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        group: str | None = None,
        connection: Any = None,
    ) -> str:
        """Send one message; returns its id once it is durable.

        The body is at most `Limits.max_message_bytes` serialised (default 128,000; else
        MessageTooLarge). `delay_seconds` is 0-86,400; None uses the queue's delivery delay.
        `content_type` is "json" (default), "text" (a str) or "bytes". `dedup_id` (1-128
        printable ASCII characters, no space): a send naming a dedup id the queue saw within
        its dedup window (`dedup_window_seconds`, default 300) stores nothing and returns the
        first message's id. `headers` (str keys and values; at most `Limits.max_headers`, keys
        up to `Limits.max_header_key_length` characters, else InvalidHeaders) travel with the
        message (`message.headers`); their JSON counts toward the size limit. `group` (1-128
        printable ASCII characters, no space) names an ordered message group: its messages are
        delivered in send order, one at a time (docs/concepts/groups.md). `connection` (an open
        psycopg AsyncConnection, on PostgreSQL only) writes inside the caller's open transaction
        instead.
        """
        span = tracing.send_span(self.name) if tracing.AVAILABLE else None
        with tracing.running(span):
            if span is not None:
                headers = tracing.inject(span, headers)
            message_id = new_message_id()
            message = self._message(body, delay_seconds, content_type, dedup_id, headers, group, message_id)
            tracing.sent(span, message.id)
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
        earlier messages of the batch): its id in the reply is then the first message's. A
        `SendRequest`'s `headers` are its own, checked as in `send`; they count toward the
        batch's size.
        """
        listed = isinstance(messages, Sequence) and not isinstance(messages, str | bytes)
        span = tracing.send_span(self.name, len(messages)) if tracing.AVAILABLE and listed else None
        with tracing.running(span):
            if span is not None:
                messages = [
                    dataclasses.replace(item, headers=tracing.inject(span, item.headers))
                    if isinstance(item, SendRequest)
                    else SendRequest(item, headers=tracing.inject(span, None))
                    for item in messages
                ]
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
        total = sum(len(message.body) + headers_size(message.headers) for message in outgoing)
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
        headers: Mapping[str, str] | None = None,
        group: str | None = None,
    ) -> str:
        """Blocking `send` for code with no event loop (Flask, Django, scripts)."""
        return self.core.run_sync(
            lambda core: self._on(core).send(
                body,
                delay_seconds=delay_seconds,
                content_type=content_type,
                dedup_id=dedup_id,
                headers=headers,
                group=group,
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
        batch_size: int | None = None,
        visibility_timeout: float | None = None,
        *,
        wait: float = 0.0,
    ) -> list[PulledMessage]:
        """Lease up to `batch_size` messages (1-100) for `visibility_timeout` seconds
        (0.05-43,200): a pull consumer. Settle them with `ack` before the lease ends. Either left
        None is the queue's pull consumer's (`App.set_pull_consumer`), else 5 messages and 30 s.

        `wait` (0-20 s; default 0) makes it a long poll: with nothing visible, the pull waits on
        the engine's wake-up and returns as soon as a message is visible, or empty at the deadline.
        Raises QueuePaused while the queue is paused.

        With a pull consumer, a message leased again after `max_retries + 1` deliveries goes to
        its dead-letter queue instead (the bound of docs/semantics.md).
        """
        limits = self.core.limits
        consumer = await self.core.pull_consumer(self.name)
        if batch_size is None:
            batch_size = L.DEFAULT_PULL_BATCH_SIZE if consumer is None else consumer.batch_size
        if visibility_timeout is None:
            visibility_timeout = (
                L.DEFAULT_VISIBILITY_TIMEOUT if consumer is None else consumer.visibility_timeout
            )
        L.check_int_range("batch_size", batch_size, 1, limits.max_batch_size)
        L.check_visibility_timeout(visibility_timeout, limits)
        L.check_pull_wait(wait)
        backend = await self.core.connected()
        leased = await backend.lease_many(self.name, batch_size, visibility_timeout)
        if not leased and wait > 0:
            leased = await self._wait_and_lease(backend, batch_size, visibility_timeout, wait)
        if not leased:
            await self.core.check_not_paused(self.name)
        if consumer is None:
            return [PulledMessage.from_leased(message) for message in leased]
        if any(past_bound(message, consumer.max_retries) for message in leased):
            leased = await self._dead_letter_unfinished(leased, consumer)
        return [PulledMessage.from_leased(message, tagged=True) for message in leased]

    async def _dead_letter_unfinished(
        self, leased: list[LeasedMessage], consumer: PullConsumer
    ) -> list[LeasedMessage]:
        """Dead-letter the messages past the bound (the runner's rule, at lease time); the rest."""
        doomed = [message for message in leased if past_bound(message, consumer.max_retries)]
        settlement = Settlement(
            dead_letters=[
                DeadLetter(
                    message.lease_id,
                    new_message_id(),
                    unfinished_reason(message),
                    consumer.dead_letter_queue,
                    message.attempts - 1,  # the deliveries so far; this lease is not one
                )
                for message in doomed
            ]
        )
        await self._settle_dead_letters(settlement, consumer)
        return [message for message in leased if not past_bound(message, consumer.max_retries)]

    async def _settle_dead_letters(self, settlement: Settlement, consumer: PullConsumer) -> SettleResult:
        """Settle, the consumer's dead-letter queue created first if it went missing (the
        consumer's settings name it, whatever `auto_create` says)."""
        queue = consumer.dead_letter_queue
        if settlement.dead_letters and queue is not None and queue not in self.core.known_queues:
            await self.core.create_queue(queue, QueueSettings(), exist_ok=True)
        result = await self.core.settle(self.name, settlement)
        for dead in settlement.dead_letters:
            if dead.lease_id not in result.stale:
                log.warning(
                    "dead_letter queue=%s to=%s attempts=%d error=%s",
                    self.name,
                    queue or "(dropped: no dead-letter queue)",
                    dead.attempts,
                    dead.error,
                )
        return result

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
        live = await self.core.live_leases(
            self.name, [untag(lease_id)[0] for lease_id in unique], visibility_timeout
        )
        stale = [lease_id for lease_id in unique if untag(lease_id)[0] not in live]
        warnings = [f"lease {lease_id!r} is unknown or has expired" for lease_id in stale]
        return ExtendResult(len(unique) - len(stale), warnings, stale)

    async def ack(
        self, acks: Sequence[str] = (), retries: Sequence[str | tuple[str, float | None]] = ()
    ) -> AckResult:
        """Settle pulled messages by lease id: ack them, or retry them (optionally delayed; a
        retry that names no delay waits the pull consumer's `retry_delay`, else none).

        With a pull consumer, a message retried on its delivery `max_retries + 1` goes to the
        consumer's dead-letter queue instead (deleted with none): counted in `retry_count` and
        `dead_letter_count`. An expired or unknown lease id is reported in `warnings` and
        changes nothing.
        """
        limits = self.core.limits
        consumer = await self.core.pull_consumer(self.name) if retries else None
        default_delay = 0.0 if consumer is None else consumer.retry_delay
        named: dict[str, str] = {}  # the engine's lease id -> the one the caller named
        settlement = Settlement()
        for lease_id in acks:
            settlement.acks.append(self._named(lease_id, named)[0])
        for item in retries:
            given, delay = (item, None) if isinstance(item, str) else item
            lease_id, attempts = self._named(given, named)
            if consumer is not None and attempts is not None and attempts > consumer.max_retries:
                settlement.dead_letters.append(
                    DeadLetter(
                        lease_id, new_message_id(), PULL_RETRIED_REASON, consumer.dead_letter_queue, attempts
                    )
                )
                continue
            delay = default_delay if delay is None else L.check_delay("delay_seconds", delay, limits)
            settlement.retries.append(Retry(lease_id, delay))
        if settlement.dead_letters and consumer is not None:
            result = await self._settle_dead_letters(settlement, consumer)
        else:
            result = await self.core.settle(self.name, settlement)
        stale = [named.get(lease_id, lease_id) for lease_id in result.stale]
        warnings = [f"lease {lease_id!r} is unknown or has expired" for lease_id in stale]
        retried = result.retried + result.dead_lettered
        return AckResult(result.acked, retried, warnings, stale, result.dead_lettered)

    @staticmethod
    def _named(lease_id: str, named: dict[str, str]) -> tuple[str, int | None]:
        engine_id, attempts = untag(lease_id)
        named[engine_id] = lease_id
        return engine_id, attempts

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

    async def delete(self, message_id: str) -> bool:
        """Delete one message by id, ready or delayed (a dead letter too, on a dead-letter
        queue); it is never delivered after. False when the queue holds no such message (acked,
        expired, deleted, or never sent). A message a consumer holds under a live lease raises
        MessageLeased and is left alone: its consumer's outcome decides. QueueNotFound if the
        queue does not exist."""
        if not isinstance(message_id, str):
            raise TypeError("delete takes a message id (str)")
        backend = await self.core.connected()
        return await backend.delete_message(self.name, message_id)

    def delete_sync(self, message_id: str) -> bool:
        """Blocking `delete`."""
        return self.core.run_sync(lambda core: self._on(core).delete(message_id))

    async def pause(self) -> None:
        """Stop delivery: consumers get nothing and `pull` raises QueuePaused; sends are still accepted."""
        backend = await self.core.connected()
        await backend.set_paused(self.name, True)

    async def resume(self) -> None:
        """Start delivery again after `pause`."""
        backend = await self.core.connected()
        await backend.set_paused(self.name, False)
