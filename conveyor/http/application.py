"""create_api: the JSON API, the dashboard, /metrics and /healthz of one App, as one ASGI app."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware

from conveyor.app import App
from conveyor.http.api import QueueApi
from conveyor.http.auth import RequireToken, SameOriginWrites
from conveyor.http.dashboard import Dashboard
from conveyor.http.envelope import EXCEPTION_HANDLERS
from conveyor.http.metrics import ApiMetrics
from conveyor.http.overload import DEFAULT_MAX_CONCURRENT_REQUESTS, ShedLoad


def create_api(
    app: App,
    *,
    token: str | None,
    dead_letter_queues: Mapping[str, str] | None = None,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
) -> Starlette:
    """The HTTP API and dashboard of `app` (docs/http.md lists the endpoints).

    `token`: every request but /healthz must carry it (`Authorization: Bearer <token>`); None
    serves without auth, for a loopback bind only. `dead_letter_queues` (queue -> DLQ) adds to
    what the dashboard knows from `app.consumers` and the `<queue>-dlq` naming. Past
    `max_concurrent_requests` in progress, requests are answered 429 at once.

    The caller owns `app`: open it before serving and close it afterwards. Queues are created on
    a send only if `app.auto_create` (`conveyor serve` turns it off: an unknown queue is a 404).
    """
    if token is not None and not token:
        raise ValueError("token must not be empty: pass None to serve without auth")
    if max_concurrent_requests < 1:
        raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent_requests}")
    # outermost first: refuse other sites' writes, then strangers, then shed load for the rest
    middleware = [Middleware(SameOriginWrites)]
    if token is not None:
        middleware.append(Middleware(RequireToken, token=token))
    middleware.append(Middleware(ShedLoad, limit=max_concurrent_requests))
    metrics = ApiMetrics()
    routes = [*QueueApi(app, metrics).routes(), *Dashboard(app, dead_letter_queues or {}).routes()]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
