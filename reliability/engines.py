"""The engines a run covers, taken by name or by URL, and the throwaway storage each run gets.

`--engines sqlite,postgres,redis,nats` uses the machine's services (127.0.0.1:5432 database `test`,
127.0.0.1:6379, 127.0.0.1:4222); a URL (`postgresql://host:port/db`, `redis://host:port/0`, `nats://host:4222`)
names another server. Each run gets storage of its own (a file, a schema, a key prefix), removed
afterwards. Scenarios that crash the engine start an own server instead (reliability/servers.py).

A new engine joins by adding an `EngineKind` to KINDS: its URL scheme, how a run gets isolated
storage on it (`isolated_url`, `cleanup`), and which own server the crash scenarios start
(`own_server`).
"""

from __future__ import annotations

import importlib.util
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from reliability import servers

MACHINE_URLS = {
    "sqlite": "sqlite://",
    "postgres": "postgresql://127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}
ALIASES = {"postgresql": "postgres"}
DEFAULT_ENGINES = ("sqlite", "postgres", "redis", "nats")


@dataclass(frozen=True)
class EngineKind:
    name: str
    schemes: tuple[str, ...]
    #: the conveyor backend module that must exist
    module: str
    #: the Python package its driver needs
    driver: str | None
    #: the URL option that isolates one run's data on a shared server (None: a file per run)
    isolation_option: str | None
    #: which own server (reliability/servers.py) the crash scenarios start, if any
    own_server: str | None


KINDS = [
    EngineKind("sqlite", ("sqlite",), "conveyor.backends.sqlite", None, None, None),
    EngineKind(
        "postgres", ("postgresql", "postgres"), "conveyor.backends.postgres", "psycopg", "schema", "postgres"
    ),
    EngineKind("redis", ("redis",), "conveyor.backends.redis", "redis", "prefix", "redis"),
    # `prefix` starts the name of every stream the engine makes, as it starts Redis keys
    EngineKind("nats", ("nats",), "conveyor.backends.nats", "nats", "prefix", "nats"),
]


@dataclass(frozen=True)
class Engine:
    """One engine of a run: its kind and the server URL runs make their storage on."""

    kind: EngineKind
    url: str

    @property
    def name(self) -> str:
        return self.kind.name

    def problem(self) -> str | None:
        """Why runs on this engine cannot happen here, or None."""
        if importlib.util.find_spec(self.kind.module) is None:
            return f"{self.kind.module} does not exist yet"
        if self.kind.driver is not None and importlib.util.find_spec(self.kind.driver) is None:
            return f"the {self.kind.driver} driver is not installed (pip install 'conveyor[all]')"
        if self.kind.name != "sqlite":
            host, port = address(self.url)
            if not _port_open(host, port):
                return f"nothing listens on {host}:{port}"
        return None

    def isolated_url(self, directory: Path, server_url: str | None = None) -> str:
        """A URL for one run: a database file in `directory`, or a fresh schema / key prefix."""
        if self.kind.isolation_option is None:
            return f"sqlite:///{directory / 'conveyor.db'}"
        name = isolation_name()
        if self.kind.name == "nats":  # a NATS prefix takes 1-32 of A-Z a-z 0-9 -
            name = name.replace("conveyor_reliability_", "rel-")
        return with_option(server_url or self.url, self.kind.isolation_option, name)

    async def cleanup(self, run_url: str) -> None:
        """Remove what a run left on a shared server (its schema or its keys)."""
        option = self.kind.isolation_option
        if option is None:
            return
        name = dict(parse_qsl(urlsplit(run_url).query)).get(option)
        if not name:
            return
        base = without_query(run_url)
        if self.kind.name == "postgres":
            import psycopg

            async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        elif self.kind.name == "redis":
            import redis.asyncio as redis

            client = redis.Redis.from_url(base)
            try:
                keys = [key async for key in client.scan_iter(match=f"*{name}*", count=1000)]
                for start in range(0, len(keys), 1000):
                    await client.delete(*keys[start : start + 1000])
            finally:
                await client.aclose()
        elif self.kind.name == "nats":
            await _delete_nats_streams(base, name)

    def own_server(self, directory: Path) -> servers.OwnServer:
        kind = self.kind.own_server
        if kind == "postgres":
            return servers.OwnPostgres(directory)
        if kind == "redis":
            return servers.OwnRedis(directory)
        if kind == "nats":
            return servers.OwnNats(directory)
        raise ValueError(f"{self.name} has no server of its own to crash")

    def own_server_problem(self) -> str | None:
        if self.kind.own_server is None:
            return f"{self.name} is embedded: it has no server to crash (a worker SIGKILL is its crash)"
        return servers.available(self.kind.own_server)


def select(spec: str | None) -> list[Engine]:
    """Engines from a comma-separated list of names and URLs (default: every engine)."""
    items = [part.strip() for part in (spec or ",".join(DEFAULT_ENGINES)).split(",") if part.strip()]
    engines: list[Engine] = []
    for item in items:
        if "://" in item:
            scheme = urlsplit(item).scheme.lower()
            kind = next((k for k in KINDS if scheme in k.schemes), None)
            if kind is None:
                raise ValueError(f"no engine takes URLs of scheme {scheme!r}")
            engines.append(Engine(kind, item))
            continue
        name = ALIASES.get(item.lower(), item.lower())
        kind = next((k for k in KINDS if k.name == name), None)
        if kind is None:
            known = ", ".join(k.name for k in KINDS)
            raise ValueError(f"unknown engine {item!r}; known: {known}, or a URL")
        engines.append(Engine(kind, MACHINE_URLS[name]))
    return engines


async def _delete_nats_streams(url: str, prefix: str) -> None:
    import json

    import nats

    if not _port_open(*address(url)):
        return  # a scenario's own cluster, stopped with its streams
    client = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        reply = await client.request("$JS.API.STREAM.NAMES", json.dumps({"subject": f"{prefix}.>"}).encode())
        for stream in json.loads(reply.data).get("streams") or []:
            await client.request(f"$JS.API.STREAM.DELETE.{stream}", b"")
    finally:
        await client.close()


def isolation_name() -> str:
    return f"conveyor_reliability_{uuid.uuid4().hex[:10]}"


def with_option(url: str, option: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != option] + [(option, value)]
    return parts._replace(query=urlencode(query)).geturl()


def without_query(url: str) -> str:
    return urlsplit(url)._replace(query="").geturl()


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url.split(",")[0])
    default = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "nats": 4222}.get(parts.scheme, 0)
    return parts.hostname or "127.0.0.1", parts.port or default


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
