"""OpenTelemetry tracing (docs/metrics.md, "Tracing"): a trace goes from the producer's send span,
through the message's headers, to the handler's process span; retries, dead letters and a
handler's exception are on it. Spans are exported in memory by the SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import conveyor
from conveyor import tracing
from conveyor.testing import drain


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def by_kind(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is kind]


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _ids(traceparent: str) -> tuple[int, int]:
    """The trace id and the parent span id a W3C traceparent names."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


async def test_a_trace_goes_from_the_send_to_the_handler(
    spans: InMemorySpanExporter, provider: TracerProvider
) -> None:
    app = conveyor.App("memory://")
    inner = provider.get_tracer("handler")
    seen: list[dict[str, str]] = []

    @app.consumer("orders")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            seen.append(dict(message.headers))
            with inner.start_as_current_span("charge card"):
                pass

    message_id = await app.queue("orders").send({"order": 1}, headers={"tenant": "acme"})
    await drain(app)
    await app.close()
    [send] = by_kind(spans, SpanKind.PRODUCER)
    [process] = by_kind(spans, SpanKind.CONSUMER)
    [charge] = [span for span in spans.get_finished_spans() if span.name == "charge card"]
    assert send.name == "send orders"
    assert process.name == "process orders"
    assert _trace_id(send) == _trace_id(process) == _trace_id(charge)
    assert process.parent is not None and process.parent.span_id == _span_id(send)
    assert charge.parent is not None and charge.parent.span_id == _span_id(process)
    assert dict(send.attributes or {}) == {
        "messaging.system": "conveyor",
        "messaging.destination.name": "orders",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": message_id,
    }
    attributes = dict(process.attributes or {})
    assert (attributes["messaging.operation.type"], attributes["messaging.message.id"]) == (
        "process",
        message_id,
    )
    assert attributes["conveyor.message.attempts"] == 1
    [headers] = seen
    assert headers["tenant"] == "acme"
    assert _ids(headers["traceparent"]) == (_trace_id(send), _span_id(send))


async def test_retries_and_dead_letters_are_events_and_the_exception_is_recorded(
    spans: InMemorySpanExporter,
) -> None:
    app = conveyor.App("memory://")

    @app.consumer("orders", max_retries=1, dead_letter_queue="orders-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise ValueError("card declined")

    await app.queue("orders").send({"order": 1})
    await drain(app, queues=["orders"])
    await app.close()
    [send] = by_kind(spans, SpanKind.PRODUCER)
    first, second = sorted(
        by_kind(spans, SpanKind.CONSUMER),
        key=lambda span: str(dict(span.attributes or {})["conveyor.message.attempts"]),
    )
    assert _trace_id(first) == _trace_id(second) == _trace_id(send)
    assert [event.name for event in first.events] == ["exception", "conveyor.retry"]
    assert [event.name for event in second.events] == ["exception", "conveyor.dead_letter"]
    dead = dict(second.events[1].attributes or {})
    assert (dead["conveyor.dead_letter.queue"], dead["conveyor.dead_letter.error"]) == (
        "orders-dlq",
        "ValueError: card declined",
    )
    assert dict(first.events[0].attributes or {})["exception.type"] == "ValueError"
    assert first.status.status_code is second.status.status_code is StatusCode.ERROR


async def test_a_batch_send_is_one_span_whose_context_every_message_carries(
    spans: InMemorySpanExporter,
) -> None:
    async with conveyor.App("memory://") as app:
        queue = app.queue("orders")
        await queue.send_batch([1, conveyor.SendRequest(2, headers={"k": "v"})])
        await app.topic("events").subscribe("audit")
        await app.topic("events").publish({"type": "x"})
        peeked = await queue.peek()
        [copy] = await app.queue("audit").peek()
    batch, publish = by_kind(spans, SpanKind.PRODUCER)
    assert dict(batch.attributes or {})["messaging.batch.message_count"] == 2
    parents = {_ids(message.headers["traceparent"]) for message in peeked}
    assert parents == {(_trace_id(batch), _span_id(batch))}
    assert peeked[1].headers["k"] == "v"
    assert publish.name == "send events"
    assert _ids(copy.headers["traceparent"]) == (_trace_id(publish), _span_id(publish))


def test_a_blocking_send_is_a_child_of_the_callers_current_span(
    spans: InMemorySpanExporter, provider: TracerProvider, tmp_path: Path
) -> None:
    # send_sync runs on a private event loop in another thread: the caller's context goes along
    app = conveyor.App(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        with provider.get_tracer("web").start_as_current_span("POST /orders") as request:
            app.queue("orders").send_sync({"id": 1})
    finally:
        asyncio.run(app.close())
    [send] = by_kind(spans, SpanKind.PRODUCER)
    assert send.parent is not None
    assert (send.parent.trace_id, send.parent.span_id) == (
        request.get_span_context().trace_id,
        request.get_span_context().span_id,
    )


async def test_a_refused_send_ends_its_span_with_the_error(spans: InMemorySpanExporter) -> None:
    async with conveyor.App("memory://") as app:
        with pytest.raises(conveyor.InvalidHeaders):
            await app.queue("orders").send(1, headers={"k": 1})  # type: ignore[dict-item]
        with pytest.raises(conveyor.InvalidHeaders):
            await app.queue("orders").send(1, headers=[("k", "v")])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await app.queue("orders").send_batch("not a list")
        assert await app.list_queues() == []
    sends = by_kind(spans, SpanKind.PRODUCER)
    assert len(sends) == 2
    assert all(send.status.status_code is StatusCode.ERROR for send in sends)
    assert all([event.name for event in send.events] == ["exception"] for send in sends)


async def test_without_a_tracer_provider_nothing_is_added_to_the_headers() -> None:
    async with conveyor.App("memory://") as app:
        await app.queue("orders").send(1)
        [message] = await app.queue("orders").peek()
    assert message.headers == {}


PRODUCER = """
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import conveyor

trace.set_tracer_provider(TracerProvider())  # the global provider, in this process only

async def main(url: str) -> None:
    async with conveyor.App(url) as app:
        with trace.get_tracer("producer").start_as_current_span("web request") as request:
            await app.queue("orders").send({"order": 1})
        context = request.get_span_context()
        print(f"{context.trace_id:032x}")

asyncio.run(main(sys.argv[1]))
"""


async def test_a_trace_goes_from_a_producer_process_to_the_handler(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(PRODUCER), url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    producer_trace = result.stdout.strip()
    app = conveyor.App(url)

    @app.consumer("orders")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    await drain(app)
    await app.close()
    [process] = by_kind(spans, SpanKind.CONSUMER)
    assert f"{_trace_id(process):032x}" == producer_trace
    assert process.parent is not None and process.parent.is_remote
