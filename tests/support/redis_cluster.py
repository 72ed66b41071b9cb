"""Local `redis-server` processes for tests (conveyor/bench/redis_servers.py starts them): a 3-master
Redis Cluster, or one standalone server a test may restart. Loopback only, no persistence, stopped by PID.

- `redis_cluster` (fixture): the URL of a fresh cluster for one test module.
- `shared_cluster()`: one cluster for the whole session, started on first use and stopped at exit
  (tests/support/engines.py runs the contract suites on it).
- `RedisServer`: one standalone server on a free port, with `restart()` (same port, data lost).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.bench.redis_servers import RedisCluster, RedisServer
from tests.support.services import need

CLUSTER_SIZE = 3

__all__ = ["RedisServer", "check_redis_binaries", "delete_cluster_keys", "redis_cluster", "shared_cluster"]


def check_redis_binaries() -> None:
    need(
        "redis-server and redis-cli",
        shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
        "install the redis-server package (apt-get install redis-server)",
    )


@contextlib.contextmanager
def running_cluster() -> Iterator[RedisCluster]:
    with tempfile.TemporaryDirectory(prefix="conveyor-redis-cluster-") as directory:
        cluster = RedisCluster(Path(directory), size=CLUSTER_SIZE)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


_shared: RedisCluster | None = None
_shared_directory: tempfile.TemporaryDirectory[str] | None = None


def shared_cluster() -> RedisCluster:
    """One cluster for the whole test session: started on first use, stopped at interpreter exit."""
    global _shared, _shared_directory
    if _shared is None:
        check_redis_binaries()
        _shared_directory = tempfile.TemporaryDirectory(prefix="conveyor-redis-cluster-")
        cluster = RedisCluster(Path(_shared_directory.name), size=CLUSTER_SIZE)
        cluster.start()
        _shared = cluster
        atexit.register(_stop_shared)
    return _shared


def _stop_shared() -> None:
    global _shared, _shared_directory
    if _shared is not None:
        _shared.stop()
        _shared = None
    if _shared_directory is not None:
        _shared_directory.cleanup()
        _shared_directory = None


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[str]:
    """The URL of a 3-master Redis Cluster of local processes, for one test module."""
    check_redis_binaries()
    with running_cluster() as cluster:
        yield cluster.url


async def delete_keys(ports: list[int], prefix: str) -> None:
    """Delete every key containing `prefix` on every node (one key per command: keys span slots)."""
    import redis.asyncio as redis

    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                await client.unlink(key)
        finally:
            await client.aclose()


async def delete_cluster_keys(url: str, prefix: str) -> None:
    """Delete every key containing `prefix` on every primary of the cluster at `url`."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(url.split("?")[0])
    try:
        keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
        for key in keys:
            await client.unlink(key)
    finally:
        await client.aclose()
