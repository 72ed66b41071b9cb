"""create_api: the JSON API, the dashboard, /metrics and /healthz of one App, as one ASGI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.admin import SAMPLE_INTERVAL_SECONDS, QueueHistory
from conveyor.app import App
from conveyor.http import operations
from conveyor.http.access_log import AccessLog
from conveyor.http.api import QueueApi
from conveyor.http.auth import RefuseTokenInUrl, RequireToken, SameOriginWrites, check_token
from conveyor.http.body import DEFAULT_BODY_TIMEOUT_SECONDS, BodyReader
from conveyor.http.cloudflare import CloudflareApi
from conveyor.http.dashboard import Dashboard
from conveyor.http.envelope import EXCEPTION_HANDLERS, JSONResponse
from conveyor.http.figures import STATS_REFRESH_SECONDS, QueueFigures
from conveyor.http.headers import SecurityHeaders
from conveyor.http.hosts import AllowedHosts, HostPolicy
from conveyor.http.long_poll import LongPolls
from conveyor.http.metrics import ApiMetrics, RequestMetrics
from conveyor.http.openapi import openapi_document
from conveyor.http.overload import DEFAULT_MAX_CONCURRENT_REQUESTS, ShedLoad

# The OpenAPI document of both mounts (no token needed: it holds no data).
OPENAPI_PATH = "/openapi.json"


def create_api(
    app: App,
    *,
    token: str | None,
    allowed_hosts: Iterable[str] = (),
    dead_letter_queues: Mapping[str, str] | None = None,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS,
    access_log: bool = False,
    stats_refresh_seconds: float = STATS_REFRESH_SECONDS,
    dashboard_sample_seconds: float | None = SAMPLE_INTERVAL_SECONDS,
) -> Starlette:
    """The HTTP API and dashboard of `app` (docs/http.md lists the endpoints).

    `token`: every request but /healthz must carry it (`Authorization: Bearer <token>`); None
    serves without auth, for a loopback bind only. `allowed_hosts`: the Host names answered
    besides the loopback ones (`"*"`: any; `".example.com"`: the domain and its subdomains).
    `dead_letter_queues` (queue -> DLQ) adds to what the dashboard knows from `app.consumers` and
    the `<queue>-dlq` naming. Past `max_concurrent_requests` in progress, requests are answered
    429 at once; a request body must arrive within `body_timeout_seconds`. `access_log`: one
    line per request on the `conveyor.http.access` logger. Pulls and /metrics answer with queue
    figures read in the background at most every `stats_refresh_seconds` (0: read on every
    request, exact but a count each time). The dashboard's figures and charts come from a reading
    of every queue taken in the background every `dashboard_sample_seconds` while the API's
    lifespan runs (the last hour of them is kept); None takes no reading in the background, only
    one per dashboard view (for an API whose dashboard nobody watches).

    Besides the native API (`/queues/...`), Cloudflare Queues' REST API is mounted at
    `/client/v4/accounts/{account_id}/queues/...` for Cloudflare's SDKs.

    The caller owns `app`: open it before serving and close it afterwards. Queues are created on
    a send only if `app.auto_create` (`conveyor serve` turns it off: an unknown queue is a 404).
    """
    if token is not None:
        check_token(token)
    if max_concurrent_requests < 1:
        raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent_requests}")
    if not body_timeout_seconds > 0:
        raise ValueError(f"body_timeout_seconds must be positive, got {body_timeout_seconds!r}")
    metrics = ApiMetrics()
    figures = QueueFigures(app, stats_refresh_seconds)
    history = QueueHistory(app, interval_seconds=dashboard_sample_seconds or SAMPLE_INTERVAL_SECONDS)
    sample_in_background = dashboard_sample_seconds is not None
    bodies = BodyReader(app.limits, body_timeout_seconds)
    long_polls = LongPolls()
    declared = [
        *QueueApi(app, metrics, figures, bodies, long_polls).operations(),
        *CloudflareApi(app, metrics, figures, bodies, long_polls).operations(),
    ]
    document = openapi_document(declared)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes = [
        *operations.routes(declared),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        *Dashboard(
            app,
            dead_letter_queues or {},
            body_timeout_seconds,
            history,
            sample_on_view=not sample_in_background,
        ).routes(),
    ]
    # outermost first: count and time, log, label every answer, refuse strangers' names, tokens
    # in URLs, other sites' writes, then requests without the token, then shed load for the rest
    middleware = [Middleware(RequestMetrics, metrics=metrics, routes=routes)]
    middleware += [Middleware(AccessLog)] if access_log else []
    middleware += [
        Middleware(SecurityHeaders),
        Middleware(AllowedHosts, policy=HostPolicy(allowed_hosts)),
        Middleware(RefuseTokenInUrl),
        Middleware(SameOriginWrites),
    ]
    if token is not None:
        public = {operation.path for operation in declared if operation.public} | {OPENAPI_PATH}
        middleware.append(Middleware(RequireToken, token=token, public_paths=public))
    middleware.append(Middleware(ShedLoad, limit=max_concurrent_requests))

    @contextlib.asynccontextmanager
    async def lifespan(api: Starlette) -> AsyncIterator[None]:
        if sample_in_background:
            history.start()
        try:
            yield
        finally:  # the background readers stop with the server, and waiting pulls answer
            long_polls.stop()
            await history.close()
            await figures.close()

    api = Starlette(
        routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan
    )
    api.state.queue_history = history  # the dashboard's sampler, for embedders and tests
    api.state.long_polls = long_polls  # stopped by conveyor's server as it begins to shut down
    return api
