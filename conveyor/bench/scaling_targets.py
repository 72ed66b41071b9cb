"""Where the scaling cases run, and what the engine spends there.

A target is one engine in one layout: SQLite (a file), PostgreSQL (the service on 5432, a schema of
its own), and Redis and NATS as servers *started for the run* on spare loopback ports (standalone,
a Redis Cluster of 1 or 3 masters, a NATS cluster of 3 nodes), so that the servers' CPU time and
command counts are this run's alone, not those of whatever else uses the machine's services.

A meter reads the engine side of a measured window: CPU seconds of the server processes (psutil),
and for Redis the calls and microseconds of `INFO commandstats`. PostgreSQL's server CPU is that
of the backends serving the worker processes' own connections (found by their client ports);
pg_stat_statements needs `shared_preload_libraries` and a restart, so it is not relied on.
SQLite runs inside the workers: its cost is the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from conveyor.bench.engines import POSTGRES_PORT, POSTGRES_URL, port_open, unique
from conveyor.bench.nats_servers import NatsCluster, NatsServer, free_ports, nats_server_installed
from conveyor.bench.redis_servers import RedisCluster, RedisServer


@dataclass(frozen=True)
class Target:
    name: str
    #: "sqlite", "postgres", "redis" or "nats"
    kind: str
    #: servers started for the run (Redis, NATS); 0 for SQLite and the PostgreSQL service
    nodes: int = 0
    #: Redis: a cluster-enabled layout (`?cluster=1`), even with one master
    cluster: bool = False
    #: NATS: how many servers hold each stream
    replicas: int = 1


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("sqlite", "sqlite"),
        Target("postgres", "postgres"),
        Target("redis", "redis", nodes=1),
        Target("redis-cluster-1", "redis", nodes=1, cluster=True),
        Target("redis-cluster-3", "redis", nodes=3, cluster=True),
        Target("nats", "nats", nodes=1),
        Target("nats-cluster-3", "nats", nodes=3),
        Target("nats-cluster-3-r3", "nats", nodes=3, replicas=3),
    )
}


def select_targets(spec: str | None) -> list[Target]:
    if not spec:
        return list(TARGETS.values())
    names = [part.strip().lower() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise ValueError(f"unknown scaling target {unknown[0]!r}; known: {', '.join(TARGETS)}")
    return [TARGETS[name] for name in dict.fromkeys(names)]


def target_problem(target: Target) -> str | None:
    """Why `target` cannot run on this machine, or None."""
    import importlib.util

    if target.kind == "postgres":
        if importlib.util.find_spec("psycopg") is None:
            return "psycopg is not installed (pip install 'conveyor[postgres]')"
        if not port_open("127.0.0.1", POSTGRES_PORT):
            return f"nothing listens on 127.0.0.1:{POSTGRES_PORT}"
    if target.kind == "redis":
        if importlib.util.find_spec("redis") is None:
            return "redis-py is not installed (pip install 'conveyor[redis]')"
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            return "redis-server and redis-cli are not on PATH (the servers are started for the run)"
    if target.kind == "nats":
        if importlib.util.find_spec("nats") is None:
            return "nats-py is not installed (pip install 'conveyor[nats]')"
        if not nats_server_installed():
            return "nats-server is not on PATH (the servers are started for the run)"
    return None


@dataclass
class Place:
    """A running target: conveyor's URL, and what its meter needs."""

    target: Target
    url: str
    server_pids: list[int] = field(default_factory=list)
    redis_ports: list[int] = field(default_factory=list)


@contextlib.contextmanager
def running(target: Target) -> Iterator[Place]:
    """Start `target`'s servers (if any) and fresh storage; stop and remove them afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="conveyor-scaling-"))
    name = unique("conveyor_scaling")
    try:
        if target.kind == "sqlite":
            yield Place(target, f"sqlite:///{directory / 'conveyor.db'}?synchronous=full")
        elif target.kind == "postgres":
            try:
                yield Place(target, f"{POSTGRES_URL}?schema={name}")
            finally:
                _drop_schema(name)
        elif target.kind == "redis":
            with _redis(target, directory) as (url, ports, pids):
                yield Place(target, f"{url}{'&' if '?' in url else '?'}prefix={name}", pids, ports)
        else:
            with _nats(target, directory) as (servers, pids):
                prefix = name.replace("_", "-")  # "_" is not allowed in a NATS stream name
                yield Place(target, f"nats://{servers}?prefix={prefix}&replicas={target.replicas}", pids)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _redis(target: Target, directory: Path) -> Iterator[tuple[str, list[int], list[int]]]:
    if target.cluster:
        cluster = RedisCluster(directory, size=target.nodes)
        cluster.start()
        try:
            pids = [node.pid for node in cluster.nodes if node.pid is not None]
            yield cluster.url, cluster.ports, pids
        finally:
            cluster.stop()
    else:
        server = RedisServer(directory)
        server.start()
        try:
            yield server.url, [server.port], [server.pid] if server.pid is not None else []
        finally:
            server.stop()


@contextlib.contextmanager
def _nats(target: Target, directory: Path) -> Iterator[tuple[str, list[int]]]:
    nodes: list[NatsServer]
    if target.nodes > 1:
        cluster = NatsCluster(directory, size=target.nodes)
        nodes = cluster.nodes
        try:
            asyncio.run(cluster.start())
        except BaseException:
            cluster.stop()
            raise
    else:
        nodes = [NatsServer(directory, "n0", free_ports(1))]
        nodes[0].start()
    try:
        pids = [node.process.pid for node in nodes if node.process is not None]
        yield ",".join(f"127.0.0.1:{node.port}" for node in nodes), pids
    finally:
        for node in nodes:
            node.stop()


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _cpu(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


class Meter:
    """The engine side of one measured window: `start` at go, `stop` when the work is done."""

    def __init__(self, place: Place, client_pids: Sequence[int]) -> None:
        self.place = place
        self.client_pids = list(client_pids)
        self._cpu: dict[int, float] = {}

    def _server_pids(self) -> list[int]:
        if self.place.target.kind == "postgres":
            return _postgres_backends(self.client_pids)
        return list(self.place.server_pids)

    def start(self) -> None:
        for port in self.place.redis_ports:
            with _redis_client(port) as client:
                client.config_resetstat()
        for pid in self._server_pids():
            cpu = _cpu(pid)
            if cpu is not None:
                self._cpu[pid] = cpu

    def stop(self) -> dict[str, float]:
        """CPU seconds of the server processes in the window and, on Redis, its command calls and
        their microseconds; empty for SQLite (the engine runs in the workers)."""
        if self.place.target.kind == "sqlite":
            return {}
        by_server = []
        for pid in self._server_pids():
            cpu = _cpu(pid)
            if cpu is not None:
                by_server.append(cpu - self._cpu.get(pid, 0.0))  # a backend opened after go counts from 0
        spent = sum(by_server)
        figures = {"engine_cpu_seconds": spent}
        if self.place.target.nodes > 1 and spent > 0:
            # how evenly a cluster's servers shared the work: 1/nodes is even, 1.0 all on one
            figures["engine_busiest_server_share"] = max(by_server) / spent
        if self.place.redis_ports:
            calls = usec = 0
            for port in self.place.redis_ports:
                with _redis_client(port) as client:
                    commandstats = client.info("commandstats")
                for name, stats in commandstats.items():
                    if name not in ("cmdstat_config", "cmdstat_info"):  # the meter's own
                        calls += int(stats["calls"])
                        usec += int(stats["usec"])
            figures |= {"engine_calls": float(calls), "engine_usec": float(usec)}
        return figures


def _redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, single_connection_client=True)


def _postgres_backends(client_pids: Sequence[int]) -> list[int]:
    """The PostgreSQL backend processes serving these client processes' connections."""
    ports: list[int] = []
    for pid in client_pids:
        with contextlib.suppress(psutil.Error):
            for socket in psutil.Process(pid).net_connections(kind="tcp"):
                if socket.raddr and socket.raddr.port == POSTGRES_PORT:
                    ports.append(socket.laddr.port)
    if not ports:
        return []
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        rows = db.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)).fetchall()
    return [int(row[0]) for row in rows]
