"""/metrics in Prometheus' text format: every queue's gauges, what this API process did (messages
and requests), the process's own figures and conveyor's build.

The queue gauges come from the engine (so they show every producer and consumer, not only this
process), read in the background at most every few seconds (figures.py): a scrape never counts
a queue. The counters are this API's own and start at 0 with it. Nothing lives in a module
global: each `create_api` has its own registry. No `_created` series: they double the series
count and Prometheus does not need them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.http.figures import QueueFigures
from conveyor.metrics.exposition import CONTENT_TYPE, QueueGauges, WithoutCreated, add_process_and_build

__all__ = ["CONTENT_TYPE", "ApiMetrics", "RequestMetrics", "route_template"]

# The route label of a request no route matched: one series, whatever paths strangers try.
UNMATCHED_ROUTE = "<unmatched>"
# The method label of anything else, so odd methods cannot grow the series count.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"


class ApiMetrics:
    """This API's counters and histograms, the process's figures, and the scrape that adds every
    queue's gauges to them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "conveyor_api_messages",
            "Messages handled through this HTTP API, by queue and operation (send, pull, ack, retry).",
            ["queue", "operation"],
            registry=self.registry,
        )
        self.requests = Counter(
            "conveyor_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "conveyor_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        add_process_and_build(self.registry, "serving this API")

    def count(self, queue: str, operation: str, amount: int) -> None:
        if amount:
            self.messages.labels(queue=queue, operation=operation).inc(amount)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        labels = {
            "method": method if method in KNOWN_METHODS else OTHER_METHOD,
            "route": route,
            "status": str(status),
        }
        self.requests.labels(**labels).inc()
        self.durations.labels(**labels).observe(seconds)

    async def scrape(self, figures: QueueFigures) -> bytes:
        stats = [queue.stats for queue in await figures.every()]
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(QueueGauges(lambda: stats))
        return generate_latest(gauges) + generate_latest(WithoutCreated(self.registry))


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route `scope` goes to (`/queues/{name}/messages`), never the
    path itself: a label per queue name or message id would grow without bound."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    for route in routes:  # the right path with the wrong method: a 405, labelled by its path
        match, _ = route.matches(scope)
        if match is Match.PARTIAL:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request in `metrics`, refused ones included
    (401, 429, ...), labelled by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(self.routes, scope)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
