"""Router: validate each message once against a pydantic union and hand it to its type's handler.

    router = conveyor.Router(QueueMessage)

    @router.on(LinkClick)                  # one event at a time
    async def on_click(event: LinkClick, env: conveyor.Env) -> None: ...

    @router.on(Signup, batch=True)         # every Signup of the batch at once (one bulk INSERT)
    async def on_signups(events: list[Signup], env: conveyor.Env) -> None: ...

A handler that needs more than the event (its headers, id or attempts) takes a third parameter:
the event's `conveyor.Message` (for a batch handler, the list of them, in the events' order).

    app.consumer("events", dead_letter_queue="events-dlq")(router)

A body that fails validation never reaches a handler: it is logged, counted and dead-lettered
(dropped when the consumer has no DLQ), never retried. When a handler raises, only its event (or,
for a batch handler, its group) is retried; the rest of the batch is acked. Handlers run one after
another in message order (a batch handler where its type first appears), so a handler sees events
in the order they were leased and a batch never multiplies its load on a database; parallelism
comes from the consumer's `max_concurrency` across batches.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast, overload

import pydantic
import pydantic_core

from conveyor.consumer.env import Env
from conveyor.consumer.message import MAX_ERROR_CHARS, Message, MessageBatch, Outcome, error_text
from conveyor.routing.schema import UnionSchema
from conveyor.routing.stats import UNKNOWN_TYPE, RouterStats

log = logging.getLogger("conveyor.router")

M = TypeVar("M", bound=pydantic.BaseModel)
EventHandler = Callable[[M, Env], Awaitable[None]]
BatchHandler = Callable[[list[M], Env], Awaitable[None]]
# the same with the delivered message(s) as a third argument: headers, id, attempts
MessageEventHandler = Callable[[M, Env, Message], Awaitable[None]]
MessageBatchHandler = Callable[[list[M], Env, list[Message]], Awaitable[None]]


class RegistersEvents(Protocol[M]):
    """What `Router.on(model)` returns: a decorator taking a handler of `model`'s events."""

    @overload
    def __call__(self, handler: EventHandler[M], /) -> EventHandler[M]: ...
    @overload
    def __call__(self, handler: MessageEventHandler[M], /) -> MessageEventHandler[M]: ...


class RegistersBatches(Protocol[M]):
    """What `Router.on(model, batch=True)` returns: a decorator taking a batch handler."""

    @overload
    def __call__(self, handler: BatchHandler[M], /) -> BatchHandler[M]: ...
    @overload
    def __call__(self, handler: MessageBatchHandler[M], /) -> MessageBatchHandler[M]: ...


Unhandled = Literal["dead_letter", "ack"]
UNHANDLED_POLICIES: tuple[Unhandled, ...] = ("dead_letter", "ack")


@dataclass(frozen=True)
class Route:
    model: type[pydantic.BaseModel]
    label: str
    handler: Callable[..., Awaitable[None]]
    batch: bool
    # the handler takes the message(s) as a third argument
    with_message: bool = False

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))


class Router:
    """A consumer handler that routes each message, by its validated type, to a handler.

    `schema` is a pydantic model or a union of models, usually
    `Annotated[A | B, Field(discriminator="type")]`. `unhandled` says what becomes of a valid
    event whose type has no handler: "dead_letter" (the default) or "ack" (drop it).
    """

    def __init__(self, schema: Any, *, unhandled: Unhandled = "dead_letter") -> None:
        if unhandled not in UNHANDLED_POLICIES:
            raise ValueError(f"unhandled must be one of {', '.join(UNHANDLED_POLICIES)}; got {unhandled!r}")
        self.schema = schema
        self.unhandled: Unhandled = unhandled
        self.union = UnionSchema.of(schema)
        self.stats = RouterStats()
        self._adapter: pydantic.TypeAdapter[pydantic.BaseModel] = pydantic.TypeAdapter(schema)
        self._routes: dict[type[pydantic.BaseModel], Route] = {}

    def __repr__(self) -> str:
        handled = ", ".join(f"{r.label}->{r.name}" for r in self._routes.values())
        return f"Router({self.union.describe()}; {handled or 'no handlers'})"

    @property
    def routes(self) -> dict[type[pydantic.BaseModel], Route]:
        """Model -> its route, in registration order."""
        return dict(self._routes)

    # -- registration ------------------------------------------------------------------------

    @overload
    def on(self, model: type[M], *, batch: Literal[False] = False) -> RegistersEvents[M]: ...

    @overload
    def on(self, model: type[M], *, batch: Literal[True]) -> RegistersBatches[M]: ...

    def on(self, model: type[M], *, batch: bool = False) -> RegistersEvents[M] | RegistersBatches[M]:
        """Register `async def handler(event: model, env)`, or with `batch=True`
        `async def handler(events: list[model], env)`, as the handler of `model`'s events.

        A handler with a third parameter also gets the delivered `Message` (its headers, id,
        attempts), or with `batch=True` the list of them in the events' order."""
        if model not in self.union.models:
            name = getattr(model, "__name__", repr(model))
            raise TypeError(f"{name} is not in this router's union ({self.union.describe()})")
        if model in self._routes:
            raise ValueError(f"{model.__name__} already has a handler: {self._routes[model].name}")

        def register(handler: Any) -> Any:
            if not _is_async(handler):
                raise TypeError(f"the handler of {model.__name__} must be an async function; got {handler!r}")
            if model in self._routes:
                raise ValueError(f"{model.__name__} already has a handler: {self._routes[model].name}")
            self._routes[model] = Route(
                model, self.union.labels[model], handler, batch, _takes_message(handler)
            )
            return handler

        return cast("RegistersEvents[M] | RegistersBatches[M]", register)

    # -- the consumer handler ----------------------------------------------------------------

    async def __call__(self, batch: MessageBatch, env: Env) -> None:
        valid: list[tuple[Message, pydantic.BaseModel]] = []
        for message in batch.messages:
            event = self._validate(message, batch.queue)
            if event is not None:
                valid.append((message, event))
        groups: dict[type[pydantic.BaseModel], list[tuple[Message, pydantic.BaseModel]]] = {}
        for message, event in valid:
            groups.setdefault(type(event), []).append((message, event))
        for message, event in valid:
            model = type(event)
            route = self._routes.get(model)
            if route is None:
                self._unhandled(message, self._label(model))
            elif not route.batch:
                await self._run_one(route, message, event, env)
            elif model in groups:
                await self._run_group(route, groups.pop(model), env)

    def _validate(self, message: Message, queue: str) -> pydantic.BaseModel | None:
        if message.content_type != "json":
            self._reject(message, queue, UNKNOWN_TYPE, f"content type {message.content_type!r} is not json")
            return None
        try:
            event = self._adapter.validate_json(message.raw)
        except pydantic.ValidationError as exc:
            self._reject(message, queue, self._label_of_invalid(message.raw), _validation_text(exc))
            return None
        self.stats.counter(self._label(type(event))).validated += 1
        return event

    def _label(self, model: type[pydantic.BaseModel]) -> str:
        return self.union.labels.get(model) or model.__name__

    def _label_of_invalid(self, raw: bytes) -> str:
        try:
            body = pydantic_core.from_json(raw)
        except ValueError:
            return UNKNOWN_TYPE
        return self.union.label_of_body(body) or UNKNOWN_TYPE

    def _reject(self, message: Message, queue: str, label: str, error: str) -> None:
        self.stats.counter(label).invalid += 1
        reason = f"invalid message: {error}"[:MAX_ERROR_CHARS]
        # the runner logs the dead letter (with this error) at WARNING
        log.info(
            "invalid message queue=%s id=%s attempts=%d type=%s: %s",
            queue,
            message.id,
            message.attempts,
            label,
            error,
            extra={
                "queue": queue,
                "message_id": message.id,
                "attempt": message.attempts,
                "outcome": "invalid",
            },
        )
        message.dead_letter(reason)

    def _unhandled(self, message: Message, label: str) -> None:
        self.stats.counter(label).unhandled += 1
        if self.unhandled == "ack":
            log.debug("no handler for type %s; acked id=%s", label, message.id)
            message.ack()
        else:
            message.dead_letter(f"no handler for type {label}")

    async def _run_one(self, route: Route, message: Message, event: pydantic.BaseModel, env: Env) -> None:
        counters = self.stats.counter(route.label)
        try:
            if route.with_message:
                await route.handler(event, env, message)
            else:
                await route.handler(event, env)
        except Exception as exc:
            counters.failed += 1
            log.exception(
                "handler %s failed on %s id=%s attempts=%d",
                route.name,
                route.label,
                message.id,
                message.attempts,
                extra={"message_id": message.id, "attempt": message.attempts, "outcome": "handler_failed"},
            )
            _retry(message, exc)
        else:
            counters.handled += 1
            message.ack()

    async def _run_group(
        self, route: Route, members: list[tuple[Message, pydantic.BaseModel]], env: Env
    ) -> None:
        counters = self.stats.counter(route.label)
        try:
            events = [event for _, event in members]
            if route.with_message:
                await route.handler(events, env, [message for message, _ in members])
            else:
                await route.handler(events, env)
        except Exception as exc:
            counters.failed += len(members)
            log.exception(
                "batch handler %s failed on %d %s events ids=%s",
                route.name,
                len(members),
                route.label,
                ",".join(message.id for message, _ in members),
            )
            for message, _ in members:
                _retry(message, exc)
        else:
            counters.handled += len(members)
            for message, _ in members:
                message.ack()


def _retry(message: Message, exc: Exception) -> None:
    message.retry()
    if message.outcome is Outcome.RETRY and message.reason is None:
        # kept as the dead-letter error should this have been the last attempt
        message.reason = error_text(exc, "")


def _validation_text(exc: pydantic.ValidationError) -> str:
    """pydantic's errors on one line, without the input or documentation links."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where + ': ' if where else ''}{error['msg']} [{error['type']}]")
    count = exc.error_count()
    return f"{count} validation error{'s' if count != 1 else ''} for {exc.title}: {'; '.join(parts)}"


def _takes_message(handler: Callable[..., Any]) -> bool:
    """Whether `handler` takes a third positional argument (the message or messages)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: two arguments
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    return variadic or len(positional) >= 3


def _is_async(handler: object) -> bool:
    """An async function, or an object whose `__call__` is one."""
    call = type(handler).__call__ if callable(handler) else None
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
