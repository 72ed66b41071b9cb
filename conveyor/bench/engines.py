"""The engines a run measures, and the throwaway storage each gets (a file, a schema, a key prefix).

An engine whose service is down is skipped whole; one whose conveyor backend module does not
exist yet still gets its raw ceiling measured, so the table shows what it will be held to.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conveyor.bench.nats_servers import NatsCluster

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_URL = f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/test"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
NATS_HOST, NATS_PORT = "127.0.0.1", 4222


@dataclass(frozen=True)
class Engine:
    name: str
    #: "memory", "sqlite", "postgres", "redis" or "nats": which raw ceiling applies
    kind: str
    #: the conveyor backend module that must exist for the conveyor cases to run
    module: str
    #: the p50 latency target in milliseconds, if the issue sets one
    latency_target_ms: float | None = None
    #: SQLite's synchronous pragma
    synchronous: str = "full"
    #: NATS: how many servers hold each stream (3: a cluster of three started for the run)
    replicas: int = 1


ENGINES: dict[str, Engine] = {
    "memory": Engine("memory", "memory", "conveyor.backends.memory"),
    "sqlite-full": Engine("sqlite-full", "sqlite", "conveyor.backends.sqlite", 5.0, "full"),
    "sqlite-normal": Engine("sqlite-normal", "sqlite", "conveyor.backends.sqlite", 5.0, "normal"),
    "postgres": Engine("postgres", "postgres", "conveyor.backends.postgres", 2.0),
    "redis": Engine("redis", "redis", "conveyor.backends.redis", 1.0),
    "nats": Engine("nats", "nats", "conveyor.backends.nats"),
    "nats-r3": Engine("nats-r3", "nats", "conveyor.backends.nats", replicas=3),
}
# `--engines sqlite` means both synchronous modes.
ALIASES = {"sqlite": ["sqlite-full", "sqlite-normal"], "postgresql": ["postgres"]}


def select(spec: str | None) -> list[Engine]:
    if not spec:
        return list(ENGINES.values())
    names: list[str] = []
    for item in (part.strip().lower() for part in spec.split(",")):
        if not item:
            continue
        expanded = ALIASES.get(item, [item])
        for name in expanded:
            if name not in ENGINES:
                known = ", ".join([*ENGINES, *ALIASES])
                raise ValueError(f"unknown engine {item!r}; known: {known}")
            if name not in names:
                names.append(name)
    return [ENGINES[name] for name in names]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def service_problem(engine: Engine) -> str | None:
    """Why neither the raw client nor conveyor can run on this engine, or None."""
    if engine.kind == "postgres":
        if importlib.util.find_spec("psycopg") is None:
            return "psycopg is not installed (pip install 'conveyor[postgres]')"
        if not port_open(POSTGRES_HOST, POSTGRES_PORT):
            return f"nothing listens on {POSTGRES_HOST}:{POSTGRES_PORT}"
    if engine.kind == "redis":
        if importlib.util.find_spec("redis") is None:
            return "redis-py is not installed (pip install 'conveyor[redis]')"
        if not port_open(REDIS_HOST, REDIS_PORT):
            return f"nothing listens on {REDIS_HOST}:{REDIS_PORT}"
    if engine.kind == "nats":
        if importlib.util.find_spec("nats") is None:
            return "nats-py is not installed (pip install 'conveyor[nats]')"
        if engine.replicas == 1 and not port_open(NATS_HOST, NATS_PORT):
            return f"nothing listens on {NATS_HOST}:{NATS_PORT}"
        if engine.replicas > 1 and shutil.which("nats-server") is None:
            return "nats-server is not on PATH (the 3-node cluster is started for the run)"
    return None


def backend_problem(engine: Engine) -> str | None:
    """Why the conveyor cases cannot run on this engine (its backend is not written yet), or None."""
    if importlib.util.find_spec(engine.module) is None:
        return f"{engine.module} does not exist yet: raw ceiling only"
    return None


def unique(prefix: str = "conveyor_bench") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def storage(engine: Engine) -> Iterator[Storage]:
    """Fresh storage for one engine's run, removed afterwards whatever happens."""
    store = Storage(engine)
    try:
        yield store
    finally:
        store.remove()


class Storage:
    """Where one engine's run keeps its data: conveyor's URL and the raw client's place."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = unique()
        self.directory = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
        self._counter = 0
        # NATS: a stream-name prefix ("_" is not allowed in one) and, for R3, a cluster of our own
        self.nats_prefix = self.name.replace("_", "-")
        self.nats_cluster: NatsCluster | None = None
        if engine.kind == "nats" and engine.replicas > 1:
            self.nats_cluster = NatsCluster(self.directory / "nats", size=engine.replicas)
            try:
                asyncio.run(self.nats_cluster.start())
            except BaseException:
                self.nats_cluster.stop()
                raise

    @property
    def nats_servers(self) -> list[str]:
        if self.nats_cluster is not None:
            return [node.url for node in self.nats_cluster.nodes]
        return [f"nats://{NATS_HOST}:{NATS_PORT}"]

    def conveyor_url(self) -> str:
        kind = self.engine.kind
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{self.directory / 'conveyor.db'}?synchronous={self.engine.synchronous}"
        if kind == "postgres":
            return f"{POSTGRES_URL}?schema={self.name}"
        if kind == "nats":
            servers = ",".join(server.removeprefix("nats://") for server in self.nats_servers)
            return f"nats://{servers}?prefix={self.nats_prefix}&replicas={self.engine.replicas}"
        return f"{REDIS_URL}?prefix={self.name}"

    def raw_sqlite_path(self) -> Path:
        return self.directory / "raw.db"

    @property
    def raw_name(self) -> str:
        """The raw client's schema (PostgreSQL) or key prefix (Redis)."""
        return f"{self.name}_raw"

    def queue_name(self, case: str) -> str:
        self._counter += 1
        return f"bench-{case}-{self._counter}"

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.engine.kind == "postgres" and service_problem(self.engine) is None:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                for schema in (self.name, self.raw_name):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if self.engine.kind == "redis" and service_problem(self.engine) is None:
            import redis

            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
            try:
                keys = list(client.scan_iter(match=f"*{self.name}*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()
        if self.engine.kind == "nats":
            try:
                if service_problem(self.engine) is None:
                    asyncio.run(delete_streams(self.nats_servers, self.nats_prefix))
            finally:
                if self.nats_cluster is not None:
                    self.nats_cluster.stop()


async def delete_streams(servers: list[str], prefix: str) -> None:
    """Delete every stream whose subjects start with `prefix.` (conveyor's and the raw client's)."""
    import nats

    nc = await nats.connect(servers)
    try:
        reply = await nc.request("$JS.API.STREAM.NAMES", json.dumps({"subject": f"{prefix}.>"}).encode())
        for stream in json.loads(reply.data).get("streams") or []:
            await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"")
    finally:
        await nc.close()
