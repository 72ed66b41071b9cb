"""Fixtures for the fault tests: the run's processes (stopped by PID afterwards), engines behind a
fault-injecting proxy, and reading the ledger the worker processes write."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from reliability.engines import with_option
from reliability.ledger import LedgerFile, read_records
from reliability.processes import Processes
from reliability.proxy import Proxy
from tests.support.engines import ENGINES, EngineSetup

# The engines a client reaches over the network: the ones a proxy can stand in front of.
NETWORK_ENGINES = ["postgres", "redis"]


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    events = LedgerFile(tmp_path / "ledger", "events")
    started = Processes(events, tmp_path / "logs")
    yield started
    await started.close()
    events.close()


def skip_memory(engine: EngineSetup) -> None:
    if engine.name == "memory":
        pytest.skip("memory:// lives in one process: no worker process can share it")


def network_engine(name: str) -> EngineSetup:
    setup = next((engine for engine in ENGINES if engine.name == name), None)
    if setup is None:
        pytest.skip(f"the {name} engine is not installed")
    setup.check()
    return setup


@contextlib.asynccontextmanager
async def behind_a_proxy(
    setup: EngineSetup, tmp_path: Path, **options: str
) -> AsyncIterator[tuple[str, Proxy]]:
    """Fresh storage on `setup`'s engine, and its URL pointing at a proxy in front of the server."""
    async with setup.storage(tmp_path) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        async with Proxy(parts.hostname, parts.port) as proxy:
            proxied = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
            for option, value in options.items():
                proxied = with_option(proxied, option, value)
            yield proxied, proxy


def deliveries(ledger: Path, key: str) -> int:
    """How many times a poison message reached a handler (the worker records it before it acts)."""
    return sum(1 for record in read_records(ledger, "poison") if record["key"] == key)


def started_keys(ledger: Path) -> set[str]:
    return {record["key"] for record in read_records(ledger, "starts")}
