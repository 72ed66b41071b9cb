"""The smart-link service: `GET /{link_id}` redirects at once; the click is queued after the response.

Where a visitor is, taken from request headers (as Cloudflare sets them in front of the app):
  - country: `CF-IPCountry` (ISO 3166-1 alpha-2; `XX`, absent or malformed means unknown);
  - position: `X-Latitude` / `X-Longitude` (decimal degrees), else Cloudflare's visitor-location
    headers `CF-IPLatitude` / `CF-IPLongitude`; absent or out of range means unknown.
A link sends a visitor to its destination for their country, else to its default destination.

Routes: `/{link_id}` (302, or a 404 page for an unknown link), `/analytics[?window=5m|1h|24h]` (the page),
`/healthz`, and `/` (redirects to the page).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import conveyor
from conveyor.background import BackgroundSender
from conveyor.demo import analytics
from conveyor.demo.consumer import DEAD_LETTER_QUEUE, QUEUE
from conveyor.demo.models import QueueMessage
from conveyor.demo.store import Link, Store, open_store

COUNTRY_HEADER = "cf-ipcountry"
LATITUDE_HEADERS = ("x-latitude", "cf-iplatitude")
LONGITUDE_HEADERS = ("x-longitude", "cf-iplongitude")
_COUNTRY = re.compile(r"[A-Z0-9]{2}")
LINK_CACHE_SECONDS = 5.0
LINK_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Visitor:
    country: str | None
    latitude: float | None
    longitude: float | None

    @classmethod
    def from_headers(cls, headers: Any) -> Visitor:
        country = (headers.get(COUNTRY_HEADER) or "").strip().upper()
        valid = _COUNTRY.fullmatch(country) is not None and country != "XX"
        return cls(
            country=country if valid else None,
            latitude=_degrees(headers, LATITUDE_HEADERS, 90.0),
            longitude=_degrees(headers, LONGITUDE_HEADERS, 180.0),
        )


def _degrees(headers: Any, names: tuple[str, ...], bound: float) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if math.isfinite(value) and -bound <= value <= bound else None
    return None


class LinkCache:
    """Links by id for `ttl` seconds, found or not: the redirect's hot path skips the database.

    An edited link takes effect within `ttl` seconds; misses are cached too, so a burst of visits
    to a mistyped link costs one query.
    """

    def __init__(self, store: Store, *, ttl: float = LINK_CACHE_SECONDS, size: int = LINK_CACHE_SIZE) -> None:
        self.store = store
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, tuple[float, Link | None]] = {}

    async def get(self, link_id: str) -> Link | None:
        now = time.monotonic()
        entry = self._entries.get(link_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        link = await self.store.get_link(link_id)
        if len(self._entries) >= self.size:
            self._entries.clear()  # crude, and enough: it only bounds memory under a scan of ids
        self._entries[link_id] = (now + self.ttl, link)
        return link


@dataclass(frozen=True)
class Deps:
    """What the routes use. `sender=None` records no clicks (the benchmark's "send off")."""

    store: Store
    clicks: conveyor.Queue
    dead_letters: conveyor.Queue
    sender: BackgroundSender | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


NOT_FOUND_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Link not found</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;color:#1f2937;display:grid;place-items:center;
min-height:90vh;margin:0}}main{{text-align:center}}h1{{font-size:4rem;margin:0;color:#6366f1}}
code{{background:#eef2ff;padding:.1em .4em;border-radius:4px}}</style></head>
<body><main><h1>404</h1><p>There is no link <code>{link_id}</code>.</p></main></body></html>"""


def create_service(deps: Deps, *, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    links = LinkCache(deps.store)

    async def follow(request: Request) -> Response:
        started = time.perf_counter()
        link_id = request.path_params["link_id"]
        visitor = Visitor.from_headers(request.headers)
        link = await links.get(link_id)
        if link is None:
            page = NOT_FOUND_PAGE.format(link_id=html.escape(link_id))
            miss = {
                "type": "LINK_MISS",
                "data": {"id": link_id[:256], "country": visitor.country, "timestamp": _now()},
            }
            background = deps.sender.after_response(miss) if deps.sender else None
            return HTMLResponse(page, status_code=404, background=background)
        destination = link.destination_for(visitor.country)
        click = {
            "type": "LINK_CLICK",
            "data": {
                "id": link.id,
                "accountId": link.account_id,
                "country": visitor.country,
                "destination": destination,
                "latitude": visitor.latitude,
                "longitude": visitor.longitude,
                "timestamp": _now(),
            },
        }
        background = deps.sender.after_response(click) if deps.sender else None
        response = RedirectResponse(destination, status_code=302, background=background)
        # the app's share of the redirect, for clients and the demo (https://w3c.github.io/server-timing/)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.3f}"
        return response

    async def page(request: Request) -> Response:
        window = request.query_params.get("window", analytics.DEFAULT_WINDOW)
        try:
            analytics.window_seconds(window)
        except analytics.UnknownWindow as exc:
            return PlainTextResponse(str(exc), status_code=400)
        snapshot = await analytics.snapshot(
            deps.store, deps.clicks, deps.dead_letters, deps.sender, window=window
        )
        fragment = request.query_params.get("fragment") == "1"
        return HTMLResponse(
            analytics.render(snapshot, fragment=fragment), headers={"Cache-Control": "no-store"}
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # not a link: browsers ask for it on their own

    async def home(request: Request) -> Response:
        return RedirectResponse("/analytics", status_code=307)

    async def not_found(request: Request, exc: Exception) -> Response:
        page = NOT_FOUND_PAGE.format(link_id=html.escape(request.url.path.lstrip("/")))
        return HTMLResponse(page, status_code=404)

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/favicon.ico", favicon),
        Route("/analytics", page),
        Route("/{link_id}", follow),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})


def build_service(queue_url: str, store_url: str, *, background_send: bool = True) -> Starlette:
    """The service as uvicorn serves it: opens the queue app and the store at startup, and on
    shutdown flushes pending sends before closing them."""
    app = conveyor.App(queue_url)
    store = open_store(store_url)
    clicks = app.queue(QUEUE, schema=QueueMessage)
    sender = BackgroundSender(clicks) if background_send else None
    deps = Deps(store, clicks, app.queue(DEAD_LETTER_QUEUE), sender)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            async with app:
                await app.ensure_queue(QUEUE)
                await app.ensure_queue(DEAD_LETTER_QUEUE)
                if sender is None:
                    yield
                else:
                    async with sender.lifespan():
                        yield
        finally:
            await store.close()

    return create_service(deps, lifespan=lifespan)
