"""The engines a run measures, and the throwaway storage each gets (a file, a schema, a key prefix).

An engine whose service is down is skipped whole; one whose conveyor backend module does not
exist yet still gets its raw ceiling measured, so the table shows what it will be held to.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_URL = f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/test"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@dataclass(frozen=True)
class Engine:
    name: str
    #: "memory", "sqlite", "postgres" or "redis": which raw ceiling applies
    kind: str
    #: the conveyor backend module that must exist for the conveyor cases to run
    module: str
    #: the p50 latency target in milliseconds, if the issue sets one
    latency_target_ms: float | None = None
    #: SQLite's synchronous pragma
    synchronous: str = "full"


ENGINES: dict[str, Engine] = {
    "memory": Engine("memory", "memory", "conveyor.backends.memory"),
    "sqlite-full": Engine("sqlite-full", "sqlite", "conveyor.backends.sqlite", 5.0, "full"),
    "sqlite-normal": Engine("sqlite-normal", "sqlite", "conveyor.backends.sqlite", 5.0, "normal"),
    "postgres": Engine("postgres", "postgres", "conveyor.backends.postgres", 2.0),
    "redis": Engine("redis", "redis", "conveyor.backends.redis", 1.0),
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

    def conveyor_url(self) -> str:
        kind = self.engine.kind
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{self.directory / 'conveyor.db'}?synchronous={self.engine.synchronous}"
        if kind == "postgres":
            return f"{POSTGRES_URL}?schema={self.name}"
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
