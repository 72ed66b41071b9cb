"""The load generator of the HTTP cases, in a process of its own: raw HTTP/1.1 over keep-alive
connections (much lighter than httpx, so on a small machine the figures are the server's), each
connection sending its next request as soon as the last one is answered (closed loop).

    python -m conveyor.bench.http_load PORT TOKEN CASE QUEUE COUNT CONNECTIONS

CASE is `ping` (GET /bench/ping), `send` (POST one message), `batch` (POST 100 messages) or
`pull_ack` (pull 100, then ack them all, until COUNT messages are acked). COUNT counts requests
for ping and send, batches for batch, messages for pull_ack. Prints one JSON line:
`{"seconds", "requests", "messages", "errors"}`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass

from conveyor.bench.body import click
from conveyor.bench.modes import BULK
from conveyor.processes import watch_parent

PULL_BATCH = 100


@dataclass
class Tally:
    requests: int = 0
    messages: int = 0
    errors: int = 0


class Connection:
    """One keep-alive connection; `call` sends a request and returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"

    @classmethod
    async def open(cls, port: int, token: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is None:
            self.writer.write(f"{request}\r\n".encode())
        else:
            framing = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            self.writer.write((request + framing).encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def ping(connection: Connection, queue: str, tally: Tally, remaining: list[int]) -> None:
    while remaining[0] > 0:
        remaining[0] -= 1
        status, _ = await connection.call("GET", "/bench/ping")
        tally.requests += 1
        tally.errors += status != 200


async def send(connection: Connection, queue: str, tally: Tally, remaining: list[int]) -> None:
    while remaining[0] > 0:
        remaining[0] -= 1
        body = json.dumps({"body": click(remaining[0])}).encode()
        status, _ = await connection.call("POST", f"/queues/{queue}/messages", body)
        tally.requests += 1
        tally.messages += status == 200
        tally.errors += status != 200


async def batch(connection: Connection, queue: str, tally: Tally, remaining: list[int]) -> None:
    while remaining[0] > 0:
        remaining[0] -= 1
        first = remaining[0] * BULK
        body = json.dumps({"messages": [{"body": click(first + n)} for n in range(BULK)]}).encode()
        status, _ = await connection.call("POST", f"/queues/{queue}/messages/batch", body)
        tally.requests += 1
        tally.messages += BULK if status == 200 else 0
        tally.errors += status != 200


async def pull_ack(connection: Connection, queue: str, tally: Tally, remaining: list[int]) -> None:
    pull = json.dumps({"batch_size": PULL_BATCH, "visibility_timeout_ms": 60_000}).encode()
    while remaining[0] > 0:
        status, answer = await connection.call("POST", f"/queues/{queue}/messages/pull", pull)
        tally.requests += 1
        if status != 200:
            tally.errors += 1
            return
        leases = [{"lease_id": message["lease_id"]} for message in json.loads(answer)["result"]["messages"]]
        if not leases:
            return  # the queue ran dry before COUNT: the rate still counts what was acked
        remaining[0] -= len(leases)
        status, answer = await connection.call(
            "POST", f"/queues/{queue}/messages/ack", json.dumps({"acks": leases}).encode()
        )
        tally.requests += 1
        if status == 200:
            tally.messages += json.loads(answer)["result"]["ack_count"]
        else:
            tally.errors += 1


CASES = {"ping": ping, "send": send, "batch": batch, "pull_ack": pull_ack}


async def run(port: int, token: str, case: str, queue: str, count: int, connections: int) -> dict[str, float]:
    pool = [await Connection.open(port, token) for _ in range(connections)]
    tally, remaining = Tally(), [count]
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for connection in pool:
                group.create_task(CASES[case](connection, queue, tally, remaining))
    finally:
        seconds = time.perf_counter() - started
        for connection in pool:
            connection.close()
    return {
        "seconds": seconds,
        "requests": tally.requests,
        "messages": tally.messages,
        "errors": tally.errors,
    }


if __name__ == "__main__":
    watch_parent()  # stop with the benchmark, however it ends
    port, token, case, queue, count, connections = sys.argv[1:7]
    figures = asyncio.run(run(int(port), token, case, queue, int(count), int(connections)))
    print(json.dumps(figures), flush=True)
