"""Load shedding: past a number of requests in progress, answer 429 at once instead of queueing.

A client that gets `overloaded` retries after `Retry-After` seconds; the requests already in
progress keep their speed instead of all slowing down together.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.http.envelope import OVERLOADED, failure

DEFAULT_MAX_CONCURRENT_REQUESTS = 512
RETRY_AFTER_SECONDS = 1


class ShedLoad:
    """ASGI middleware: 429 `overloaded` while `limit` requests are in progress (probes excepted)."""

    def __init__(self, app: ASGIApp, limit: int, exempt_paths: Collection[str] = ("/healthz",)) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_requests must be at least 1, got {limit}")
        self.app = app
        self.limit = limit
        self.exempt_paths = exempt_paths
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            response = failure(
                429,
                OVERLOADED,
                [f"the server is busy ({self.limit:,} requests in progress); retry shortly"],
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
                path=scope["path"],
            )
            await response(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
