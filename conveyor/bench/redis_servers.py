"""Local `redis-server` processes: one standalone server, or a Redis Cluster of N masters (N ≥ 1),
for the scaling benchmark and the tests' fixtures. Loopback ports of their own, no persistence,
files in a given directory, each process stopped by its PID (and sent SIGTERM if the process that
started it dies).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conveyor.processes import terminate

STARTUP_TIMEOUT_SECONDS = 20.0
# Redis Cluster's hash slots: every one must be served for cluster_state:ok
LAST_SLOT = 16_383
# `redis-cli --cluster create` refuses fewer masters than this; smaller clusters assign slots by hand
CLI_CREATE_MINIMUM = 3


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
    # Linux: the server gets SIGTERM if the process that started it dies without cleaning up
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cli(port: int, *args: str) -> str:
    """One `redis-cli` command against the server on `port`; its stdout."""
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_SECONDS,
        check=False,
    )
    return result.stdout


def _wait_until(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if check():
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

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
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
        _wait_until(f"port {self.port}", lambda: cli(self.port, "PING").strip() == "PONG")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process, STARTUP_TIMEOUT_SECONDS)

    def restart(self) -> None:
        """Stop and start again on the same port: with persistence off, every key is gone."""
        self.stop()
        self.start()


class RedisCluster:
    """`size` cluster-enabled masters on loopback ports, every hash slot served, no replicas."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a Redis Cluster needs at least one master")
        self.directory = directory
        self.nodes = [RedisServer(directory, cluster=True) for _ in range(size)]

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
            if len(self.nodes) >= CLI_CREATE_MINIMUM:
                addresses = [f"127.0.0.1:{port}" for port in self.ports]
                create = ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0"]
                subprocess.run(
                    [*create, "--cluster-yes"],
                    capture_output=True,
                    timeout=STARTUP_TIMEOUT_SECONDS,
                    check=True,
                )
            else:
                self._assign_slots()
            for port in self.ports:
                _wait_until(
                    f"cluster_state:ok on {port}",
                    lambda port=port: "cluster_state:ok" in cli(port, "CLUSTER", "INFO"),  # type: ignore[misc]
                )
        except BaseException:
            self.stop()
            raise

    def _assign_slots(self) -> None:
        first = self.ports[0]
        for port in self.ports[1:]:
            cli(first, "CLUSTER", "MEET", "127.0.0.1", str(port))
        share = (LAST_SLOT + 1) // len(self.nodes)
        for index, port in enumerate(self.ports):
            low = index * share
            high = LAST_SLOT if index == len(self.nodes) - 1 else low + share - 1
            cli(port, "CLUSTER", "ADDSLOTSRANGE", str(low), str(high))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
