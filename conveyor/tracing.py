"""OpenTelemetry tracing (the `conveyor[otel]` extra; docs/metrics.md, "Tracing").

A send (`Queue.send`, `send_batch`, `Topic.publish`) is a PRODUCER span, `send <queue>`, whose
W3C trace context (`traceparent`, `tracestate`) goes into every message's headers through the
global propagator. A worker runs each delivered message under a CONSUMER span, `process <queue>`,
the child of the context its headers carry, so a trace goes from the producer to the handler;
a retry and a dead-lettering are events on it, a handler's exception is recorded on it. Attributes
follow the messaging semantic conventions (messaging.system "conveyor").

Spans go to the global tracer provider unless `use_tracer_provider` names another. With no SDK
provider set (or without opentelemetry installed at all) nothing is recorded and no header added:
a send pays for one no-op span (a microsecond or two), a batch of deliveries for one more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.types import LeasedMessage, Settlement

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # pragma: no cover - the extra is not installed
    AVAILABLE = False
else:
    AVAILABLE = True

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider


class Delivery(Protocol):
    """What ending a message's span reads of it (a consumer's Message)."""

    @property
    def lease_id(self) -> str: ...

    @property
    def attempts(self) -> int: ...


# Semantic-convention attribute names (messaging spans).
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
# conveyor's own: a delivery's attempt number, and what the events of a message's outcome carry
ATTEMPTS = "conveyor.message.attempts"
RETRY_EVENT = "conveyor.retry"
RETRY_DELAY = "conveyor.retry.delay_seconds"
DEAD_LETTER_EVENT = "conveyor.dead_letter"
DEAD_LETTER_QUEUE = "conveyor.dead_letter.queue"
DEAD_LETTER_ERROR = "conveyor.dead_letter.error"
RELEASED_EVENT = "conveyor.released"

# conveyor's tracer: the global provider's (a proxy until one is set, which then follows it:
# asking the global provider on every send would cost more than the no-op span), or the one of
# `use_tracer_provider`.
_tracer: Tracer | None = trace.get_tracer("conveyor") if AVAILABLE else None
_global_tracer = _tracer


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace to `provider` instead of the global one (None: the global one again)."""
    global _tracer
    _tracer = _global_tracer if provider is None else provider.get_tracer("conveyor")


# -- producers -----------------------------------------------------------------------------------


def send_span(destination: str, count: int | None = None) -> Span | None:
    """A started PRODUCER span for a send of `count` messages (None: one) to `destination`, or
    None when tracing is off (no SDK provider, no current trace). The caller runs the send
    inside `running(span)`."""
    tracer = _tracer
    if tracer is None:
        return None
    span = tracer.start_span(f"send {destination}", kind=SpanKind.PRODUCER)
    if not span.get_span_context().is_valid:
        # no SDK provider and no trace to continue: nothing to record or pass on (a sampled-out
        # span is valid, and passes its context on so that the consumer samples it out too)
        return None
    span.set_attributes(
        {SYSTEM: "conveyor", DESTINATION: destination, OPERATION_TYPE: "send", OPERATION_NAME: "send"}
    )
    if count is not None:
        span.set_attribute(BATCH_COUNT, count)
    return span


def inject(span: Span, headers: Mapping[str, str] | None) -> Any:
    """`headers` with the trace context of `span` added (over any the caller set); headers that
    are not a mapping are returned as they are, for the send to refuse (InvalidHeaders)."""
    if headers is not None and not isinstance(headers, Mapping):
        return headers
    carrier = dict(headers) if headers is not None else {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


# what `running(None)` gives: stateless, so one serves every send
_NOT_TRACED: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()


def running(span: Span | None) -> contextlib.AbstractContextManager[Any]:
    """`span` current while the block runs, ended after it (an exception recorded on it)."""
    return _NOT_TRACED if span is None else trace.use_span(span, end_on_exit=True)


def sent(span: Span | None, message_id: str) -> None:
    if span is not None:
        span.set_attribute(MESSAGE_ID, message_id)


# -- consumers -----------------------------------------------------------------------------------


def process_spans(queue: str, leased: Sequence[LeasedMessage]) -> list[Span] | None:
    """One started CONSUMER span per delivered message, each the child of the trace context in
    its headers (a root where there is none); None when nothing would be recorded."""
    tracer = _tracer
    if tracer is None:
        return None
    spans: list[Span] = []
    for message in leased:
        parent = propagate.extract(message.headers) if message.headers else None
        attributes: dict[str, Any] = {
            SYSTEM: "conveyor",
            DESTINATION: queue,
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            MESSAGE_ID: message.id,
            ATTEMPTS: message.attempts,
        }
        span = tracer.start_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        if not spans and not span.is_recording():
            return None  # no SDK provider, or sampled out: the rest would not be recorded either
        spans.append(span)
    return spans


@contextlib.contextmanager
def handling(spans: list[Span] | None) -> Iterator[None]:
    """A batch of one runs its handler under its message's span, so the handler's own spans are
    its children; a larger batch's handler runs in the context it had (its messages may belong
    to several traces)."""
    if spans is None or len(spans) != 1:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(spans[0]))
    try:
        yield
    finally:
        otel_context.detach(token)


def finish(
    spans: list[Span] | None,
    deliveries: Sequence[Delivery],
    settlement: Settlement,
    error: BaseException | None,
) -> None:
    """End each message's span with its outcome: a retry or a dead-lettering as an event, the
    handler's exception recorded."""
    if spans is None:
        return
    retries = {retry.lease_id: retry.delay_seconds for retry in settlement.retries}
    dead = {item.lease_id: item for item in settlement.dead_letters}
    for span, message in zip(spans, deliveries, strict=True):
        if error is not None:
            span.record_exception(error)
        if message.lease_id in retries:
            span.add_event(RETRY_EVENT, {RETRY_DELAY: retries[message.lease_id], ATTEMPTS: message.attempts})
        dead_letter = dead.get(message.lease_id)
        if dead_letter is not None:
            span.add_event(
                DEAD_LETTER_EVENT,
                {
                    DEAD_LETTER_QUEUE: dead_letter.dead_letter_queue or "",
                    DEAD_LETTER_ERROR: dead_letter.error,
                    ATTEMPTS: message.attempts,
                },
            )
        if error is not None or dead_letter is not None:
            description = dead_letter.error if dead_letter is not None else f"{type(error).__name__}: {error}"
            span.set_status(StatusCode.ERROR, description)
        span.end()


def abandon(spans: list[Span] | None) -> None:
    """End the spans of messages given back unhandled (the worker stopped)."""
    for span in spans or ():
        span.add_event(RELEASED_EVENT)
        span.end()
