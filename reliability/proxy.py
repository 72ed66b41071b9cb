"""A loopback TCP proxy in front of an engine's server, for the faults that happen between a
client and its server without touching the server itself:

- `blackhole()`: requests still reach the server (which runs and commits them) but every reply
  is dropped, and the connections are cut a moment later: the client cannot know what happened;
- `refuse()`: every connection is cut and new ones are refused (the server looks down);
- `heal()`: back to normal.

It runs on the caller's event loop: `async with Proxy(host, port) as proxy: ... proxy.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

# How long a blackhole lets requests through, their replies dropped, before it cuts the connections.
BLACKHOLE_CUT_SECONDS = 0.3
CHUNK_BYTES = 65_536


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.refusing = False
        self.dropping_replies = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def blackhole(self) -> None:
        """Let requests through but drop their replies; cut every connection a moment later."""
        self.dropping_replies = True
        self.refusing = True
        asyncio.get_running_loop().call_later(BLACKHOLE_CUT_SECONDS, self._cut_all)

    def refuse(self) -> None:
        """Cut every connection and refuse new ones until `heal()`."""
        self.refusing = True
        self._cut_all()

    def heal(self) -> None:
        self.refusing = False
        self.dropping_replies = False

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        for pump in (
            self._pump(client_reader, server_writer, replies=False),
            self._pump(server_reader, client_writer, replies=True),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                if replies and self.dropping_replies:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
