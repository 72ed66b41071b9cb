"""One Python peer's one-by-one send, for `bench/peers.py`: run with a Python that has the peers
installed (a venv of their own: their pins clash with conveyor's), never imports conveyor.

python bench/peer_send.py PEER COUNT NAME   # prints the peer's sends per second

PEER is one of PEERS; NAME is the run's own Redis key prefix / queue name, PostgreSQL schema
(created, then dropped) or, for Huey on SQLite, the database file (removed afterwards). Each
peer enqueues COUNT link-click events, one call after the other, each waiting for its own
write, exactly as its docs show a producer doing it; its keys, schema or file are removed
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

REDIS_HOST = os.environ.get("CONVEYOR_BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CONVEYOR_BENCH_REDIS_PORT", "6379"))
POSTGRES_URL = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


def click(n: int) -> dict[str, Any]:
    """The body of conveyor/bench/body.py (this file imports nothing of conveyor)."""
    return {
        "type": "LINK_CLICK",
        "data": {
            "link_id": f"lnk_{n % 1000:04d}",
            "n": n,
            "country": "FR",
            "referrer": "https://example.com/some/page",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        },
    }


def handle(body: dict[str, Any]) -> None:
    """The task every peer enqueues (never run here)."""


def _rate(count: int, send: Callable[[int], Any]) -> float:
    started = time.perf_counter()
    for n in range(count):
        send(n)
    return count / (time.perf_counter() - started)


async def _async_rate(count: int, send: Callable[[int], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for n in range(count):
        await send(n)
    return count / (time.perf_counter() - started)


def _peer(module: str) -> Any:
    """A peer's module (imported by name: they are installed apart from conveyor's environment)."""
    return importlib.import_module(module)


def _drop_redis_keys(pattern: str) -> None:
    client = _peer("redis").Redis(host=REDIS_HOST, port=REDIS_PORT)
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


# -- Redis -------------------------------------------------------------------------------------


def huey(count: int, name: str) -> float:
    app = _peer("huey").RedisHuey(name, host=REDIS_HOST, port=REDIS_PORT)
    task = app.task()(handle)
    try:
        return _rate(count, lambda n: task(click(n)))
    finally:
        app.storage.flush_all()


def dramatiq(count: int, name: str) -> float:
    broker = _peer("dramatiq.brokers.redis").RedisBroker(host=REDIS_HOST, port=REDIS_PORT, namespace=name)
    actor = _peer("dramatiq").actor(handle, broker=broker, queue_name="bench")
    try:
        return _rate(count, lambda n: actor.send(click(n)))
    finally:
        broker.flush_all()
        broker.close()
        _drop_redis_keys(f"{name}*")


def rq(count: int, name: str) -> float:
    connection = _peer("redis").Redis(host=REDIS_HOST, port=REDIS_PORT)
    queue = _peer("rq").Queue(name, connection=connection)
    try:
        # the task by name: RQ refuses a function of __main__ (it is never run here anyway)
        return _rate(count, lambda n: queue.enqueue("peer_send.handle", click(n)))
    finally:
        queue.delete(delete_jobs=True)
        connection.close()


def saq(count: int, name: str) -> float:
    async def run() -> float:
        queue = _peer("saq").Queue.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}", name=name)
        try:
            return await _async_rate(count, lambda n: queue.enqueue("handle", body=click(n)))
        finally:
            await queue.disconnect()

    try:
        return asyncio.run(run())
    finally:
        _drop_redis_keys(f"saq:{name}:*")
        _drop_redis_keys(f"saq:job:{name}:*")


def faststream(count: int, name: str) -> float:
    async def run() -> float:
        broker = _peer("faststream.redis").RedisBroker(f"redis://{REDIS_HOST}:{REDIS_PORT}")
        await broker.connect()
        try:
            # a list: FastStream's queue (a channel is fire-and-forget pub/sub)
            return await _async_rate(count, lambda n: broker.publish(click(n), list=name))
        finally:
            await broker.stop()

    try:
        return asyncio.run(run())
    finally:
        _drop_redis_keys(name)


# -- SQLite ------------------------------------------------------------------------------------


def _huey_sqlite(count: int, path: str, synchronous: int) -> float:
    # WAL (Huey's default) with conveyor's mode: Huey's `fsync` offers FULL (True) or OFF (False)
    # only, so its connections get the pragma as they are made (2 FULL, 1 NORMAL)
    app = _peer("huey").SqliteHuey("bench", filename=path)
    make_connection = app.storage._create_connection

    def connection() -> Any:
        conn = make_connection()
        conn.execute(f"pragma synchronous={synchronous}")
        return conn

    app.storage._create_connection = connection
    task = app.task()(handle)
    try:
        return _rate(count, lambda n: task(click(n)))
    finally:
        app.storage.flush_all()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)


def huey_sqlite_full(count: int, name: str) -> float:
    return _huey_sqlite(count, name, synchronous=2)


def huey_sqlite_normal(count: int, name: str) -> float:
    return _huey_sqlite(count, name, synchronous=1)


# -- PostgreSQL ----------------------------------------------------------------------------------


def _in_schema(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


def _with_schema(schema: str, run: Callable[[str], float]) -> float:
    psycopg = _peer("psycopg")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        return run(_in_schema(schema))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pgqueuer(count: int, name: str) -> float:
    async def run(url: str) -> float:
        conn = await _peer("psycopg").AsyncConnection.connect(url, autocommit=True)
        try:
            queries = _peer("pgqueuer.queries").Queries(_peer("pgqueuer.db").PsycopgDriver(conn))
            await queries.install()
            return await _async_rate(
                count, lambda n: queries.enqueue("handle", json.dumps(click(n)).encode())
            )
        finally:
            await conn.close()

    return _with_schema(name, lambda url: asyncio.run(run(url)))


def procrastinate(count: int, name: str) -> float:
    async def run(url: str) -> float:
        procrastinate = _peer("procrastinate")
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        task = app.task(name="handle", queue="bench")(handle)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            return await _async_rate(count, lambda n: task.defer_async(body=click(n)))

    return _with_schema(name, lambda url: asyncio.run(run(url)))


PEERS: dict[str, tuple[str, Callable[[int, str], float]]] = {
    "huey": ("redis", huey),
    "dramatiq": ("redis", dramatiq),
    "faststream": ("redis", faststream),
    "saq": ("redis", saq),
    "rq": ("redis", rq),
    "huey-sqlite-full": ("sqlite-full", huey_sqlite_full),
    "huey-sqlite-normal": ("sqlite-normal", huey_sqlite_normal),
    "pgqueuer": ("postgres", pgqueuer),
    "procrastinate": ("postgres", procrastinate),
}


def main() -> int:
    peer, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(json.dumps({"peer": peer, "rate": PEERS[peer][1](count, name)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
