"""The API on a real uvicorn server over loopback: what only a socket shows (slow headers, a client
that hangs up mid-body)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import conveyor
from conveyor.http import create_api
from conveyor.http.server import bind, make_server
from tests.support.polling import eventually

# Generous: the server answers in milliseconds; this only bounds a failing test.
WAIT_SECONDS = 30.0


@dataclass
class Served:
    host: str
    port: int


@pytest.fixture
async def served(sqlite_app: conveyor.App) -> AsyncIterator[Served]:
    await sqlite_app.create_queue("jobs")
    sock = bind("127.0.0.1", 0)
    server = make_server(create_api(sqlite_app, token=None), log_level="info", header_timeout=0.3)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # the socket listens already: connections wait in its backlog until uvicorn accepts them
        yield Served("127.0.0.1", sock.getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_SECONDS)
        sock.close()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT_SECONDS)


async def test_a_connection_that_never_finishes_its_headers_is_closed(served: Served) -> None:
    reader, writer = await asyncio.open_connection(served.host, served.port)
    # no blank line after the headers: they go on
    writer.write(b"POST /queues/jobs/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    assert await read_all(reader) == b""  # closed by the server, without an answer
    writer.close()


async def test_a_kept_alive_connection_must_send_its_next_headers_in_time_too(served: Served) -> None:
    reader, writer = await asyncio.open_connection(served.host, served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b'"messages":[]}'), WAIT_SECONDS)
    assert first.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 12")  # trickles, then stops
    await writer.drain()
    assert await read_all(reader) == b""
    writer.close()


async def test_a_client_that_hangs_up_mid_body_costs_one_log_line(
    served: Served, sqlite_app: conveyor.App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection(served.host, served.port)
    writer.write(
        b"POST /queues/jobs/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"body": '
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # let the server start reading the body
    writer.close()
    await writer.wait_closed()
    # the server logs in its own time: look until it has
    await eventually(
        lambda: any("disconnected" in r.getMessage() for r in caplog.records),
        "the server logs the disconnect",
        WAIT_SECONDS,
    )
    await asyncio.sleep(0.1)  # anything it would log after that line, it has logged
    about_it = [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith(("conveyor", "uvicorn"))
    ]
    assert len([r for r in about_it if "disconnected" in r.getMessage()]) == 1, caplog.text
    assert all(r.exc_info is None and r.levelno < logging.WARNING for r in about_it), caplog.text
    assert "Traceback" not in caplog.text
    assert (await sqlite_app.queue("jobs").stats()).backlog == 0


async def test_the_official_sdk_works_over_the_network_with_only_base_url_and_token(
    sqlite_app: conveyor.App,
) -> None:
    from cloudflare import AsyncCloudflare

    sock = bind("127.0.0.1", 0)
    server = make_server(create_api(sqlite_app, token="sdk-token"), log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/client/v4"
    try:
        async with AsyncCloudflare(api_token="sdk-token", base_url=base_url) as client:
            queue = await client.queues.create(account_id="local", queue_name="network")
            assert queue is not None and queue.queue_id
            await client.queues.messages.bulk_push(
                queue.queue_id, account_id="local", messages=[{"body": {"n": n}} for n in range(3)]
            )
            pulled = await client.queues.messages.pull(queue.queue_id, account_id="local", batch_size=10)
            assert pulled is not None and pulled.messages is not None and len(pulled.messages) == 3
            acked = await client.queues.messages.ack(
                queue.queue_id,
                account_id="local",
                acks=[{"lease_id": m.lease_id or ""} for m in pulled.messages],
            )
            assert acked is not None and acked.ack_count == 3
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_SECONDS)
        sock.close()
    assert (await sqlite_app.queue("network").stats()).total == 0


async def test_accepted_connections_have_nagle_off() -> None:
    """With Nagle on, an answer written in two parts (head, body) waits for the client's delayed
    ACK: 40 ms a request on a keep-alive connection."""
    import socket

    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    listening = bind("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
        assert await asyncio.wait_for(accepted, WAIT_SECONDS) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
