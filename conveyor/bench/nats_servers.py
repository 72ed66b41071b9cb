"""Local `nats-server` processes with JetStream, for the benchmark's 3-node cluster and the tests'
fault fixtures: one server that may be stopped and started, or a 3-node cluster whose nodes may be
killed. Loopback ports of their own, store directories in a given directory, each process stopped
by its PID (and sent SIGTERM if the process that started it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT_SECONDS = 30.0
CLUSTER_NAME = "conveyor-test"
# a replicated stream created and deleted to learn that every peer of a new cluster is ready
PLACEMENT_PROBE = "conveyor-placement-probe"


def nats_server_installed() -> bool:
    return shutil.which("nats-server") is not None


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if the test process dies without cleaning up
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def jetstream_request(port: int, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JetStream API request to the server on `port`; the reply, errors included."""
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=2, allow_reconnect=False)
    try:
        payload = b"" if request is None else json.dumps(request).encode()
        reply = await nc.request(f"$JS.API.{subject}", payload, timeout=2)
        result: dict[str, Any] = json.loads(reply.data)
        return result
    finally:
        await nc.close()


class NatsServer:
    """One nats-server with JetStream on file storage; `routes` makes it a cluster node."""

    def __init__(self, directory: Path, name: str, ports: list[int], routes: list[int] | None = None) -> None:
        self.directory = directory
        self.name = name
        self.port = ports[0]
        self.cluster_port = ports[1] if routes is not None else None
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        store = self.directory / self.name
        store.mkdir(parents=True, exist_ok=True)
        args = [
            "nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
            "-sd", str(store), "-l", str(self.directory / f"{self.name}.log"),
        ]  # fmt: skip
        if self.routes is not None:
            routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
            args += ["--cluster_name", CLUSTER_NAME, "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--routes", routes]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {self.name} did not start; see {self.directory}")
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signum)
        try:
            process.wait(timeout=STARTUP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    async def wait_for_jetstream(self) -> None:
        """Until this server answers JetStream requests (in a cluster: a meta leader is elected)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            with contextlib.suppress(Exception):
                if "error" not in await jetstream_request(self.port, "INFO"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"JetStream on {self.name} did not become ready")
            await asyncio.sleep(0.1)


class NatsCluster:
    """Three JetStream nodes routed to each other on loopback."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        ports = free_ports(2 * size)
        client_ports, cluster_ports = ports[:size], ports[size:]
        self.nodes = [
            NatsServer(directory, f"n{i}", [client_ports[i], cluster_ports[i]], cluster_ports)
            for i in range(size)
        ]

    def url(self, **options: object) -> str:
        servers = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"nats://{servers}" + (f"?{query}" if query else "")

    async def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            await node.wait_for_jetstream()
        await self._wait_for_placement()

    async def _wait_for_placement(self) -> None:
        # A meta leader can answer before every peer has reported in; until then creating a
        # replicated stream fails with "no suitable peers for placement". Probe with one.
        probe = {"name": PLACEMENT_PROBE, "subjects": [PLACEMENT_PROBE], "num_replicas": len(self.nodes)}
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        port = self.nodes[0].port
        while True:
            with contextlib.suppress(Exception):
                if "error" not in await jetstream_request(port, f"STREAM.CREATE.{PLACEMENT_PROBE}", probe):
                    await jetstream_request(port, f"STREAM.DELETE.{PLACEMENT_PROBE}")
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster could not place a replicated stream")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    async def stream_cluster(self, stream: str) -> dict[str, Any]:
        """The `cluster` part of a stream's info (leader, replicas and their lag), asked of any
        running node."""
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(Exception):
                    info = await jetstream_request(node.port, f"STREAM.INFO.{stream}")
                    if "error" not in info and info.get("cluster", {}).get("leader"):
                        cluster: dict[str, Any] = info["cluster"]
                        return cluster
        raise RuntimeError(f"no running node knows a leader for stream {stream}")
