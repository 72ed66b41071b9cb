"""Typed messages: a pydantic union validated once per message and routed by type to handlers."""

from conveyor.routing.router import (
    BatchHandler,
    EventHandler,
    MessageBatchHandler,
    MessageEventHandler,
    Route,
    Router,
)
from conveyor.routing.stats import RouterStats, TypeCounters

__all__ = [
    "BatchHandler",
    "EventHandler",
    "MessageBatchHandler",
    "MessageEventHandler",
    "Route",
    "Router",
    "RouterStats",
    "TypeCounters",
]
