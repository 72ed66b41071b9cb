"""The worker's /metrics endpoint: prometheus-client's own small HTTP server, on a thread of its
own, so a scrape is answered even while handlers keep the event loop busy."""

from __future__ import annotations

import asyncio
import errno
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from conveyor.errors import MetricsServerError


class MetricsServer:
    """Serves `registry` at http://host:port/metrics (any path answers) until `close()`."""

    def __init__(self, registry: CollectorRegistry, *, port: int, host: str) -> None:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {why}") from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.host = host
        self.port = int(server.server_address[1])  # the bound one, when asked for port 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop answering and free the port (waits up to half a second for the server's loop)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    async def aclose(self) -> None:
        """`close()` off the event loop, which keeps running meanwhile."""
        await asyncio.to_thread(self.close)
