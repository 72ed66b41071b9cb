"""Worker metrics in process: every outcome counted once on every engine, a lost lease, the queue
gauges sampled in the background (a scrape never counts a queue), one registry per App."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor.testing import drain
from tests.support.apps import AppFactory
from tests.support.polling import eventually


def value(registry: CollectorRegistry, name: str, queue: str = "jobs") -> float:
    found = registry.get_sample_value(name, {"queue": queue})
    return 0.0 if found is None else found


async def scrape(app: conveyor.App) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET the App's metrics_app(), as sample name -> labels -> value."""
    transport = httpx.ASGITransport(app=app.metrics_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "_created" not in response.text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_every_outcome_is_counted_once_per_queue(app: conveyor.App) -> None:
    registry = app.metrics.registry

    @app.consumer("jobs", max_retries=1, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            if message.body == "poison" or (message.body == "flaky" and message.attempts == 1):
                message.retry()
        if any(message.body == "raise" for message in batch.messages):
            raise RuntimeError("the handler failed")  # the unmarked rest of the batch is retried

    await app.queue("jobs").send_batch(["ok"] * 4 + ["flaky"] * 2 + ["poison"] * 2)
    await drain(app)
    # deliveries: ok 4, flaky 2 + 2, poison 2 + 2 (max_retries=1: two deliveries, then the DLQ)
    assert value(registry, "conveyor_worker_messages_received_total") == 12
    assert value(registry, "conveyor_worker_messages_acked_total") == 6
    assert value(registry, "conveyor_worker_messages_retried_total") == 4
    assert value(registry, "conveyor_worker_messages_dead_lettered_total") == 2
    assert value(registry, "conveyor_worker_leases_lost_total") == 0
    assert value(registry, "conveyor_worker_handler_errors_total") == 0
    batches = value(registry, "conveyor_worker_batch_size_count")
    assert batches >= 2 and value(registry, "conveyor_worker_batch_size_sum") == 12
    assert value(registry, "conveyor_worker_handler_duration_seconds_count") == batches
    assert len(await app.queue("jobs-dlq").peek(10)) == 2


async def test_a_raising_handler_counts_an_error_and_retries(app: conveyor.App) -> None:
    registry = app.metrics.registry

    @app.consumer("jobs", max_retries=0)  # no DLQ: dropped, and still counted as dead-lettered
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise RuntimeError("always")

    await app.queue("jobs").send("x")
    await drain(app)
    assert value(registry, "conveyor_worker_handler_errors_total") == 1
    assert value(registry, "conveyor_worker_messages_dead_lettered_total") == 1
    assert value(registry, "conveyor_worker_messages_acked_total") == 0


@pytest.mark.slow
async def test_a_handler_that_blocks_past_its_lease_counts_a_lost_lease(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    registry = app.metrics.registry
    attempts: list[int] = []

    @app.consumer("jobs", visibility_timeout=0.2, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        attempts.extend(message.attempts for message in batch.messages)
        if attempts == [1]:
            # blocks the event loop (CPU-bound work would): the heartbeat cannot renew the lease
            time.sleep(0.8)  # noqa: ASYNC251

    await app.queue("jobs").send("slow")
    await drain(app)
    assert attempts == [1, 2]  # the first outcome was dropped: delivered again
    assert value(registry, "conveyor_worker_leases_lost_total") == 1
    assert value(registry, "conveyor_worker_messages_acked_total") == 1
    assert value(registry, "conveyor_worker_messages_received_total") == 2


@pytest.mark.slow
async def test_a_long_handler_counts_its_renewed_leases(make_app: AppFactory) -> None:
    app = await make_app(real_clock=True)
    registry = app.metrics.registry

    @app.consumer("jobs", visibility_timeout=0.3, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await asyncio.sleep(0.8)  # renewed every 0.1 s meanwhile

    await app.queue("jobs").send_batch(["a", "b"])
    await drain(app)
    assert value(registry, "conveyor_worker_leases_renewed_total") >= 2  # both, at least once
    assert value(registry, "conveyor_worker_leases_lost_total") == 0


async def sqlite_app(tmp_path: Path) -> conveyor.App:
    app = conveyor.App(f"sqlite:///{tmp_path / 'metrics.db'}")
    await app.connect()
    return app


async def test_queue_gauges_follow_sends_through_the_sampler_never_a_scrape(tmp_path: Path) -> None:
    app = await sqlite_app(tmp_path)
    counted: list[str] = []
    original = app.backend.stats

    async def counting_stats(queue: str) -> conveyor.QueueStats:
        counted.append(queue)
        return await original(queue)

    app.backend.stats = counting_stats  # type: ignore[method-assign]
    metrics = app.metrics
    metrics.sample_interval_seconds = 0.05
    in_handler = asyncio.Event()
    release = asyncio.Event()

    @app.consumer("jobs", max_batch_size=1, max_batch_timeout=0, max_concurrency=2, dead_letter_queue="dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        in_handler.set()
        await release.wait()

    stop = asyncio.Event()
    await app.create_queue("jobs")
    await app.queue("jobs").pause()  # nothing is delivered: the backlog only grows
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    try:

        async def gauges_show_both_queues() -> bool:
            backlog = (await scrape(app)).get("conveyor_queue_backlog")
            return backlog == {(("queue", "dlq"),): 0, (("queue", "jobs"),): 0}

        # the consumed queue and its dead-letter queue (created as the consumer starts)
        await eventually(gauges_show_both_queues, "the sampler read both queues")
        await app.queue("jobs").send_batch(["a", "b", "c"])

        async def backlog_shows_the_send() -> bool:
            return (await scrape(app))["conveyor_queue_backlog"][(("queue", "jobs"),)] == 3

        await eventually(backlog_shows_the_send, "the backlog gauge showed the 3 messages sent")
        for _ in range(20):
            await scrape(app)
        # a scrape reads what the sampler read: every stats call is one of its readings (two
        # queues each; the one under way may have read one of them)
        assert len(counted) <= (metrics.samples + 1) * 2

        await app.queue("jobs").resume()
        await asyncio.wait_for(in_handler.wait(), 10)
        await eventually(
            lambda: (
                app.metrics.registry.get_sample_value("conveyor_worker_concurrency_in_use", {"queue": "jobs"})
                == 2
            ),
            "two batches ran at once",
        )
        assert metrics.registry.get_sample_value("conveyor_worker_concurrency_limit", {"queue": "jobs"}) == 2
    finally:
        release.set()
        stop.set()
        await worker
        await app.close()
    assert not metrics.sampling  # stopped with the worker


async def test_two_apps_in_one_process_keep_their_metrics_apart(tmp_path: Path) -> None:
    first = conveyor.App("memory://")
    second = conveyor.App("memory://")
    for app in (first, second):

        @app.consumer("jobs")
        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            pass

    assert first.metrics.registry is not second.metrics.registry
    await first.queue("jobs").send_batch([1, 2, 3])
    await second.queue("jobs").send(1)
    await drain(first)
    await drain(second)
    assert value(first.metrics.registry, "conveyor_worker_messages_acked_total") == 3
    assert value(second.metrics.registry, "conveyor_worker_messages_acked_total") == 1
    samples = await scrape(first)
    assert samples["conveyor_build_info"]
    assert samples["process_resident_memory_bytes"]
    await first.close()
    await second.close()


async def test_serve_metrics_on_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    app = conveyor.App("memory://")
    server = app.serve_metrics(0)
    try:
        with pytest.raises(conveyor.MetricsServerError) as caught:
            app.serve_metrics(server.port)
        assert str(caught.value) == f"cannot serve metrics on 127.0.0.1:{server.port}: the port is in use"
        with pytest.raises(conveyor.LimitExceeded, match="metrics_port"):
            app.serve_metrics(70_000)
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url)
        assert response.status_code == 200 and "conveyor_build_info" in response.text
    finally:
        server.close()
        await app.close()


@pytest.mark.slow
async def test_the_endpoint_answers_while_a_handler_blocks_the_event_loop(tmp_path: Path) -> None:
    app = await sqlite_app(tmp_path)
    server = app.serve_metrics(0)
    answers: list[str] = []
    answered = threading.Event()
    while_blocked: list[bool] = []

    def scrape_from_another_thread() -> None:
        answers.append(httpx.get(server.url, timeout=10).text)
        answered.set()

    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        threading.Thread(target=scrape_from_another_thread).start()
        # the event loop waits here (as in CPU-bound work): only the endpoint's own thread can answer
        while_blocked.append(answered.wait(timeout=10))

    try:
        await app.queue("jobs").send("x")
        await drain(app)
    finally:
        server.close()
        await app.close()
    assert while_blocked == [True]
    assert 'conveyor_worker_messages_received_total{queue="jobs"} 1.0' in answers[0]
    assert 'conveyor_worker_concurrency_in_use{queue="jobs"} 1.0' in answers[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_run_consumers_serves_the_metrics_while_the_consumers_run() -> None:
    app = conveyor.App("memory://")
    handled = asyncio.Event()

    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.set()

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop, metrics_port=port))
    try:
        await app.queue("jobs").send("x")
        await asyncio.wait_for(handled.wait(), 10)
        async with httpx.AsyncClient() as client:

            async def acked() -> bool:
                text = (await client.get(url)).text
                return 'conveyor_worker_messages_acked_total{queue="jobs"} 1.0' in text

            await eventually(acked, "the scrape showed the ack")
            stop.set()
            await worker
            with pytest.raises(httpx.ConnectError):
                await client.get(url)  # the endpoint stopped with the consumers
    finally:
        stop.set()
        await worker
        await app.close()


async def test_run_consumers_on_a_taken_metrics_port_starts_nothing() -> None:
    app = conveyor.App("memory://")
    taken = app.serve_metrics(0)
    handled: list[object] = []

    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)

    await app.queue("jobs").send("x")
    try:
        with pytest.raises(conveyor.MetricsServerError, match="the port is in use"):
            await app.run_consumers(metrics_port=taken.port)
        assert handled == [] and (await app.queue("jobs").stats()).backlog == 1
    finally:
        taken.close()
        await app.close()
