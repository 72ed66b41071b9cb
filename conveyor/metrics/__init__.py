"""Prometheus metrics (needs prometheus-client: the `metrics` or `http` extra): a worker's own
(worker.py), served on a port of their own (server.py) or mounted in an ASGI app, and what every
conveyor /metrics shares (exposition.py)."""

from conveyor.metrics.exposition import CONTENT_TYPE, QUEUE_GAUGES, QueueGauges, exposed
from conveyor.metrics.server import MetricsServer
from conveyor.metrics.worker import WorkerMetrics

__all__ = ["CONTENT_TYPE", "QUEUE_GAUGES", "MetricsServer", "QueueGauges", "WorkerMetrics", "exposed"]
