"""A worker's Prometheus metrics: what its consumers did (counters and histograms, per queue),
the concurrency they use now, and the gauges of the queues they read, sampled in the background.

Everything lives in this object's own registry (one per App), never prometheus-client's global
one: two Apps in one process do not clash. The hooks (ConsumerObserver) run on the worker's event
loop and only bump counters; a scrape (possibly on the metrics server's thread) reads what the
sampler last read and never counts a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor import limits as L
from conveyor.consumer.observer import ConsumerObserver
from conveyor.consumer.runner import ConsumerRunner
from conveyor.core import Core
from conveyor.errors import ConveyorError, QueueNotFound
from conveyor.metrics.exposition import QueueGauges, add_process_and_build, exposed
from conveyor.types import QueueStats, SettleResult

log = logging.getLogger("conveyor.metrics")

# Handler durations, in seconds: from a millisecond to the longest sensible lease renewal cycle.
HANDLER_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Batch sizes, in messages (max_batch_size is at most 100).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100)


class _Concurrency(Collector):
    """Batches running now and the current limit, per consumed queue, read from the runners."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        in_use = GaugeMetricFamily(
            "conveyor_worker_concurrency_in_use", "Batches whose handler runs now.", labels=["queue"]
        )
        limit = GaugeMetricFamily(
            "conveyor_worker_concurrency_limit",
            "Batches that may run at once now (max_concurrency, or where autoscaling stands).",
            labels=["queue"],
        )
        running: dict[str, int] = {}
        limits: dict[str, int] = {}
        for runner in list(self.metrics.runners):
            queue = runner.spec.queue
            running[queue] = running.get(queue, 0) + runner.slots.running
            limits[queue] = limits.get(queue, 0) + runner.slots.limit
        for queue in sorted(running):
            in_use.add_metric([queue], running[queue])
            limit.add_metric([queue], limits[queue])
        yield in_use
        yield limit


@dataclass(frozen=True, slots=True)
class _QueueSeries:
    """One queue's children of the per-batch counters and histograms."""

    received: Counter
    acked: Counter
    retried: Counter
    dead_lettered: Counter
    handler_errors: Counter
    handler_seconds: Histogram
    batch_size: Histogram


class WorkerMetrics(ConsumerObserver):
    """The metrics of the workers of one App (see docs/metrics.md for every series)."""

    def __init__(
        self, core: Core, *, sample_interval_seconds: float = L.METRICS_SAMPLE_INTERVAL_SECONDS
    ) -> None:
        if not sample_interval_seconds > 0:
            raise ValueError(f"the sample interval must be positive, got {sample_interval_seconds!r} s")
        self.core = core
        self.sample_interval_seconds = sample_interval_seconds
        self.runners: list[ConsumerRunner] = []
        self.registry = CollectorRegistry()
        #: what a server serves: the registry without `_created` series
        self.served = exposed(self.registry)
        self._stats: dict[str, QueueStats] = {}
        self._series: dict[str, _QueueSeries] = {}
        self._sampler: asyncio.Task[None] | None = None
        self.samples = 0  # readings taken (what a test waits on)

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, ["queue"], registry=self.registry)

        self.received = counter(
            "conveyor_worker_messages_received", "Messages handed to a handler (redeliveries included)."
        )
        self.acked = counter("conveyor_worker_messages_acked", "Messages acknowledged (deleted).")
        self.retried = counter(
            "conveyor_worker_messages_retried", "Messages retried (delivered again later)."
        )
        self.dead_lettered = counter(
            "conveyor_worker_messages_dead_lettered",
            "Messages moved to the dead-letter queue (or dropped, when the consumer has none).",
        )
        self.handler_errors = counter("conveyor_worker_handler_errors", "Batches whose handler raised.")
        self.leases_renewed = counter(
            "conveyor_worker_leases_renewed", "Leases renewed while their batch waited or ran."
        )
        self.leases_lost = counter(
            "conveyor_worker_leases_lost",
            "Messages whose lease had expired when their outcome was written: the outcome was "
            "dropped and the message is delivered again.",
        )
        self.handler_seconds = Histogram(
            "conveyor_worker_handler_duration_seconds",
            "Time a handler took on one batch.",
            ["queue"],
            buckets=HANDLER_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "conveyor_worker_batch_size",
            "Messages per batch handed to a handler.",
            ["queue"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Concurrency(self))
        self.registry.register(QueueGauges(self._last_stats))
        add_process_and_build(self.registry, "running this worker")

    # -- the hooks (on the event loop) -------------------------------------------------------

    def started(self, runners: Sequence[ConsumerRunner]) -> None:
        self.runners.extend(runners)
        for runner in runners:  # every consumed queue shows 0s from the start, not only once used
            self._of(runner.spec.queue)
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(
                self._sample_forever(), name="conveyor-metrics-sampler"
            )

    async def stopped(self, runners: Sequence[ConsumerRunner]) -> None:
        for runner in runners:
            with contextlib.suppress(ValueError):
                self.runners.remove(runner)
        if not self.runners:
            await self.close()

    def batch_started(self, queue: str, size: int) -> None:
        series = self._of(queue)
        series.received.inc(size)
        series.batch_size.observe(size)

    def batch_handled(self, queue: str, seconds: float, failed: bool) -> None:
        series = self._of(queue)
        series.handler_seconds.observe(seconds)
        if failed:
            series.handler_errors.inc()

    def settled(self, queue: str, result: SettleResult) -> None:
        series = self._of(queue)
        if result.acked:
            series.acked.inc(result.acked)
        if result.retried:
            series.retried.inc(result.retried)
        if result.dead_lettered:
            series.dead_lettered.inc(result.dead_lettered)
        if result.stale:
            self.leases_lost.labels(queue).inc(len(result.stale))

    def renewed(self, queue: str, count: int) -> None:
        if count:
            self.leases_renewed.labels(queue).inc(count)

    def _of(self, queue: str) -> _QueueSeries:
        """The per-batch series of `queue`, looked up once (`labels()` costs a lock per call)."""
        series = self._series.get(queue)
        if series is None:
            series = self._series[queue] = _QueueSeries(
                received=self.received.labels(queue),
                acked=self.acked.labels(queue),
                retried=self.retried.labels(queue),
                dead_lettered=self.dead_lettered.labels(queue),
                handler_errors=self.handler_errors.labels(queue),
                handler_seconds=self.handler_seconds.labels(queue),
                batch_size=self.batch_size.labels(queue),
            )
        return series

    # -- the queue gauges, sampled in the background -----------------------------------------

    def queues(self) -> list[str]:
        """The queues the gauges cover: every consumed queue and its dead-letter queue."""
        names = set()
        for runner in self.runners:
            names.add(runner.spec.queue)
            if runner.spec.dead_letter_queue is not None:
                names.add(runner.spec.dead_letter_queue)
        return sorted(names)

    async def sample(self) -> None:
        """Read the stats of every queue the gauges cover, now (one stats call per queue)."""
        backend = await self.core.connected()
        readings: dict[str, QueueStats] = {}
        for name in self.queues():
            with contextlib.suppress(QueueNotFound):  # deleted meanwhile: its gauges go
                readings[name] = await backend.stats(name)
        self._stats = readings
        self.samples += 1

    def _last_stats(self) -> list[QueueStats]:
        readings = self._stats  # one reading: the sampler replaces it whole, maybe meanwhile
        return [readings[name] for name in sorted(readings)]

    async def _sample_forever(self) -> None:
        """Sample every interval, never more than METRICS_SAMPLER_MAX_DUTY of the time; a failed
        reading keeps the last figures and is logged."""
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except ConveyorError as exc:
                log.warning("could not sample the queues for metrics: %s", " ".join(str(exc).split()))
            except Exception:
                log.exception("could not sample the queues for metrics")
            took = time.monotonic() - started
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a driver swallowed the cancel: stop all the same
            await asyncio.sleep(max(self.sample_interval_seconds, took / L.METRICS_SAMPLER_MAX_DUTY) - took)

    @property
    def sampling(self) -> bool:
        """Whether the sampler runs (while a worker of the App runs)."""
        return self._sampler is not None and not self._sampler.done()

    async def close(self) -> None:
        """Stop the sampler (the gauges keep their last values)."""
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
