"""Local `redis-server` processes for tests: a 3-master Redis Cluster, or one standalone server a test
may restart. Loopback only, no persistence, files in a temporary directory, stopped by PID.

- `redis_cluster` (fixture): the URL of a fresh cluster for one test module.
- `shared_cluster()`: one cluster for the whole session, started on first use and stopped at exit
  (tests/support/engines.py runs the contract suites on it).
- `RedisServer`: one standalone server on a free port, with `restart()` (same port, data lost).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import need

STARTUP_TIMEOUT = 20.0
CLUSTER_SIZE = 3


def check_redis_binaries() -> None:
    need(
        "redis-server and redis-cli",
        shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
        "install the redis-server package (apt-get install redis-server)",
    )


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port pair found")


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if the test process dies without cleaning up
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    return result.stdout


def _wait_until(condition: str, check: object) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server: timed out waiting for {condition}")


class RedisServer:
    """One `redis-server` process on a loopback port, without persistence."""

    def __init__(self, directory: Path, port: int | None = None, *, cluster: bool = False) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.directory / f"redis-{self.port}.log"),
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        _wait_until(f"port {self.port}", lambda: _cli(self.port, "PING").strip() == "PONG")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port: with persistence off, every key is gone."""
        self.stop()
        self.start()


class LocalCluster:
    """Three cluster-enabled masters on loopback ports, joined with `redis-cli --cluster create`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes = [RedisServer(directory, cluster=True) for _ in range(CLUSTER_SIZE)]

    @property
    def url(self) -> str:
        return f"{self.nodes[0].url}?cluster=1"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=STARTUP_TIMEOUT,
                check=True,
            )
            for port in self.ports:
                _wait_until(
                    f"cluster_state:ok on {port}",
                    lambda port=port: "cluster_state:ok" in _cli(port, "CLUSTER", "INFO"),
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def running_cluster() -> Iterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="conveyor-redis-cluster-") as directory:
        cluster = LocalCluster(Path(directory))
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


_shared: LocalCluster | None = None
_shared_directory: tempfile.TemporaryDirectory[str] | None = None


def shared_cluster() -> LocalCluster:
    """One cluster for the whole test session: started on first use, stopped at interpreter exit."""
    global _shared, _shared_directory
    if _shared is None:
        check_redis_binaries()
        _shared_directory = tempfile.TemporaryDirectory(prefix="conveyor-redis-cluster-")
        cluster = LocalCluster(Path(_shared_directory.name))
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
