"""The access log (off by default; `conveyor serve --access-log`): one line per request.

The query string is never logged: a URL may carry something secret (auth.py refuses tokens
there, but a client may still put one in). Lines go to the `conveyor.http.access` logger.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("conveyor.http.access")


class AccessLog:
    """ASGI middleware: `127.0.0.1:52814 POST /queues/jobs/messages 200 1.4ms`, once per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            who = f"{client[0]}:{client[1]}" if client else "-"
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info("%s %s %s %s %.1fms", who, scope["method"], scope["path"], status or "-", elapsed_ms)
