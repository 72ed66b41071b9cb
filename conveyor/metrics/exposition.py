"""What every conveyor /metrics shares (the worker's and `conveyor serve`'s): queue gauges from a
reading of their stats, the process and build figures, and exposition without `_created` series
(they double the series count and Prometheus does not need them)."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.types import QueueStats

# The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric name, help, value of one queue's stats)
QUEUE_GAUGES: tuple[tuple[str, str, Callable[[QueueStats], float]], ...] = (
    ("conveyor_queue_backlog", "Messages ready for delivery now.", lambda s: s.backlog),
    ("conveyor_queue_delayed", "Messages not visible yet (delayed sends and retries).", lambda s: s.delayed),
    ("conveyor_queue_in_flight", "Messages leased to a consumer.", lambda s: s.in_flight),
    ("conveyor_queue_oldest_age_seconds", "Age of the oldest message.", lambda s: s.oldest_age_seconds),
    ("conveyor_queue_bytes", "Bytes of the stored bodies.", lambda s: s.bytes),
    ("conveyor_queue_paused", "1 while delivery is paused.", lambda s: int(s.paused)),
)


class QueueGauges(Collector):
    """Queue stats read beforehand as gauges: collecting never reads an engine (prometheus-client
    collects synchronously, possibly on another thread)."""

    def __init__(self, stats: Callable[[], Sequence[QueueStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        readings = self.stats()
        for name, documentation, value in QUEUE_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for stats in readings:
                family.add_metric([stats.queue], float(value(stats)))
            yield family


class WithoutCreated(Collector):
    """A registry's metrics without their `_created` samples (prometheus-client can only turn
    them off for the whole process; this keeps the choice to this registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self.registry.collect():
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield kept


def exposed(registry: CollectorRegistry) -> CollectorRegistry:
    """A registry to serve: `registry` without `_created` series (a registry of its own, so
    prometheus-client's servers can filter it by `name[]`)."""
    served = CollectorRegistry(auto_describe=False)
    served.register(WithoutCreated(registry))
    return served


def add_process_and_build(registry: CollectorRegistry, what: str) -> None:
    """The process's CPU, memory and file descriptors, Python's version, and conveyor_build_info;
    `what` completes the build's help ("The conveyor serving this API.")."""
    build = Info("conveyor_build", f"The conveyor {what}.", registry=registry)
    build.info({"version": _version(), "python": platform.python_version()})
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)


def _version() -> str:
    """conveyor's installed version (read from its metadata: `conveyor.__version__` sits above
    this layer)."""
    try:
        return metadata.version("conveyor")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
