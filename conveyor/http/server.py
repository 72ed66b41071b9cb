"""The HTTP server under `conveyor serve`: uvicorn, with a deadline for request headers.

uvicorn closes idle keep-alive connections but gives a client that sends its request line and
headers slowly (or never) all the time it wants: each such connection holds a socket open
(slowloris). Here a connection must deliver complete headers within `header_timeout` seconds
of opening, and again after each response; otherwise it is closed. (The body has its own time
limit, in body.py.)
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from conveyor.http.long_poll import stop_long_polls

log = logging.getLogger("conveyor.http")

# How long a connection may take to send a request's line and headers, in seconds.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# Connections the kernel holds for the server before it accepts them (uvicorn's default).
LISTEN_BACKLOG = 2048


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing connections that do not send their headers in time."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        request_in_progress = self.cycle is not None and not self.cycle.response_complete
        if request_in_progress or self.transport.is_closing():
            return  # its headers came; the body has its own limit
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed %s's connection: no complete request headers in %gs", client, self.header_timeout)
        self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """A HeaderDeadlineProtocol class with its own deadline (uvicorn takes a class, not an instance)."""
    if not seconds > 0:
        raise ValueError(f"header_timeout must be a positive number of seconds, got {seconds!r}")
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": float(seconds)})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound before anything else starts (OSError when taken).

    Made as TCP explicitly (`IPPROTO_TCP`, as getaddrinfo gives): asyncio turns Nagle's algorithm
    off (TCP_NODELAY) only on connections of such a socket, and with it on, an answer written in
    two parts waits for the client's delayed ACK (40 ms a request).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, answering the API's waiting long-poll pulls as it begins to shut down
    (uvicorn waits for requests in progress before the app's own lifespan hears of it)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_long_polls(self.config.app)
        await super().shutdown(sockets)


def make_server(
    api: ASGIApp,
    *,
    log_level: str,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
) -> Server:
    """A uvicorn server for `api`; start it with `await server.serve(sockets=[bind(host, port)])`."""
    config = uvicorn.Config(
        api,
        http=protocol_with_header_timeout(header_timeout),
        log_level=log_level,
        server_header=False,
        # conveyor's own access log (access_log.py) leaves query strings out; uvicorn's would not
        access_log=False,
        # uvicorn logs through the root logger (stderr): stdout stays the banner or --json events
        log_config=None,
        lifespan="on",
    )
    return Server(config)
