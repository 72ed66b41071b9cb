"""Every engine the conformance suite runs against, and how a test gets a fresh, isolated one.

An engine joins the suite by adding an `EngineSetup` to ENGINES: a URL factory giving each test
its own storage (a file, a schema, a key prefix) and a cleanup that removes it afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import (
    NATS_HOST,
    NATS_PORT,
    NATS_URL,
    POSTGRES_HOST,
    POSTGRES_PORT,
    POSTGRES_URL,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    need,
    port_open,
)


@dataclass(frozen=True)
class EngineSetup:
    name: str
    #: True when the engine takes time from the app's clock (a FakeClock drives it)
    local_clock: bool
    #: (tmp_path) -> async context manager yielding a fresh URL, cleaned up on exit
    storage: Callable[[Path], contextlib.AbstractAsyncContextManager[str]]
    #: raises Skipped (or fails in CI) when the engine's service or driver is missing
    check: Callable[[], None] = lambda: None
    #: True for an engine that runs only the conformance modules (tests/*/test_contract*.py),
    #: not every engine-parametrised test: what it adds is in those, and its setup costs time
    conformance_only: bool = False


@contextlib.asynccontextmanager
async def memory_storage(tmp_path: Path) -> AsyncIterator[str]:
    yield "memory://"


@contextlib.asynccontextmanager
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{tmp_path / 'conveyor.db'}"


def unique_name(prefix: str = "conveyor_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def postgres_storage(tmp_path: Path) -> AsyncIterator[str]:
    schema = unique_name()
    try:
        yield f"{POSTGRES_URL}?schema={schema}"
    finally:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.asynccontextmanager
async def redis_storage(tmp_path: Path) -> AsyncIterator[str]:
    prefix = unique_name()
    try:
        yield f"{REDIS_URL}?prefix={prefix}"
    finally:
        import redis.asyncio as redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@contextlib.asynccontextmanager
async def redis_cluster_storage(tmp_path: Path) -> AsyncIterator[str]:
    """A key prefix on a local 3-master Redis Cluster shared by the session
    (see tests/support/redis_cluster.py)."""
    from tests.support.redis_cluster import delete_keys, shared_cluster

    cluster = shared_cluster()  # on the main thread: its servers die with it (PR_SET_PDEATHSIG)
    prefix = unique_name()
    try:
        yield f"{cluster.url}&prefix={prefix}"
    finally:
        await delete_keys(cluster.ports, prefix)


@contextlib.asynccontextmanager
async def nats_storage(tmp_path: Path) -> AsyncIterator[str]:
    """A stream-name prefix of its own on the machine's NATS server; its streams are deleted after."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield f"{NATS_URL}?prefix={prefix}"
    finally:
        await delete_nats_streams(NATS_URL, prefix)


@contextlib.asynccontextmanager
async def nats_cluster_storage(tmp_path: Path) -> AsyncIterator[str]:
    """A stream-name prefix of its own on a local 3-node JetStream cluster shared by the session
    (tests/support/nats_cluster.py), streams on all three servers; deleted after."""
    from tests.support.nats_cluster import CLUSTER_REPLICAS, shared_nats_cluster

    cluster = await shared_nats_cluster()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield cluster.url(replicas=CLUSTER_REPLICAS, prefix=prefix)
    finally:
        await delete_nats_streams(cluster.nodes[0].url, prefix)


async def delete_nats_streams(url: str, prefix: str) -> None:
    import json

    import nats

    nc = await nats.connect(url.split("?")[0])
    try:
        reply = await nc.request("$JS.API.STREAM.NAMES", json.dumps({"subject": f"{prefix}.>"}).encode())
        for stream in json.loads(reply.data).get("streams") or []:
            await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"")
    finally:
        await nc.close()


def check_nats() -> None:
    need("the NATS engine", importlib.util.find_spec("nats") is not None, "pip install 'conveyor[nats]'")
    need("NATS", port_open(NATS_HOST, NATS_PORT), f"nothing listens on {NATS_HOST}:{NATS_PORT}")


def check_nats_cluster() -> None:
    from tests.support.nats_cluster import check_nats_server

    need("the NATS engine", importlib.util.find_spec("nats") is not None, "pip install 'conveyor[nats]'")
    check_nats_server()


def check_redis_cluster() -> None:
    from tests.support.redis_cluster import check_redis_binaries

    need("the Redis engine", importlib.util.find_spec("redis") is not None, "pip install 'conveyor[redis]'")
    check_redis_binaries()


def check_postgres() -> None:
    need(
        "the PostgreSQL engine",
        importlib.util.find_spec("psycopg") is not None,
        "pip install 'conveyor[postgres]'",
    )
    need(
        "PostgreSQL",
        port_open(POSTGRES_HOST, POSTGRES_PORT),
        f"nothing listens on {POSTGRES_HOST}:{POSTGRES_PORT}",
    )


def check_redis() -> None:
    need("the Redis engine", importlib.util.find_spec("redis") is not None, "pip install 'conveyor[redis]'")
    need("Redis", port_open(REDIS_HOST, REDIS_PORT), f"nothing listens on {REDIS_HOST}:{REDIS_PORT}")


def _engine_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


ENGINES: list[EngineSetup] = [
    EngineSetup("memory", True, memory_storage),
    EngineSetup("sqlite", True, sqlite_storage),
]
if _engine_available("conveyor.backends.postgres"):
    ENGINES.append(EngineSetup("postgres", False, postgres_storage, check_postgres))
if _engine_available("conveyor.backends.redis"):
    ENGINES.append(EngineSetup("redis", False, redis_storage, check_redis))
    ENGINES.append(EngineSetup("redis-cluster", False, redis_cluster_storage, check_redis_cluster))
if _engine_available("conveyor.backends.nats"):
    ENGINES.append(EngineSetup("nats", False, nats_storage, check_nats))
    ENGINES.append(
        EngineSetup("nats-cluster", False, nats_cluster_storage, check_nats_cluster, conformance_only=True)
    )
