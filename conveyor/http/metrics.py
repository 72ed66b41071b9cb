"""/metrics in Prometheus' text format: every queue's gauges and counters of what this API process
did.

The gauges come from the engine (so they show every producer and consumer, not only this
process), read in the background at most every few seconds (figures.py): a scrape never counts
a queue. The counters are this API's own and start at 0 with it. Nothing lives in a module
global: each `create_api` has its own registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.http.figures import QueueFigures
from conveyor.types import QueueStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric name, help, value of one queue's stats)
GAUGES: tuple[tuple[str, str, Callable[[QueueStats], float]], ...] = (
    ("conveyor_queue_backlog", "Messages ready for delivery now.", lambda s: s.backlog),
    ("conveyor_queue_delayed", "Messages not visible yet (delayed sends and retries).", lambda s: s.delayed),
    ("conveyor_queue_in_flight", "Messages leased to a consumer.", lambda s: s.in_flight),
    ("conveyor_queue_oldest_age_seconds", "Age of the oldest message.", lambda s: s.oldest_age_seconds),
    ("conveyor_queue_bytes", "Bytes of the stored bodies.", lambda s: s.bytes),
    ("conveyor_queue_paused", "1 while delivery is paused.", lambda s: int(s.paused)),
)


class _QueueGauges(Collector):
    """One scrape's queue stats as gauges (prometheus-client collects synchronously, so the stats
    are read first, asynchronously, and handed over)."""

    def __init__(self, stats: Sequence[QueueStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        for name, documentation, value in GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for stats in self.stats:
                family.add_metric([stats.queue], float(value(stats)))
            yield family


class ApiMetrics:
    """This API's counters, and the scrape that adds every queue's gauges to them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "conveyor_api_messages",
            "Messages handled through this HTTP API, by queue and operation (send, pull, ack, retry).",
            ["queue", "operation"],
            registry=self.registry,
        )

    def count(self, queue: str, operation: str, amount: int) -> None:
        if amount:
            self.messages.labels(queue=queue, operation=operation).inc(amount)

    async def scrape(self, figures: QueueFigures) -> bytes:
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(_QueueGauges([queue.stats for queue in await figures.every()]))
        return generate_latest(gauges) + generate_latest(self.registry)
