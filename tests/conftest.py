from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from conveyor.testing import FakeClock
from tests.support.apps import TEST_LIMITS, AppFactory, TimeMachine
from tests.support.engines import ENGINES, EngineSetup


@pytest.fixture(autouse=True)
def _close_the_loop_pytest_asyncio_left(request: pytest.FixtureRequest) -> None:
    """pytest-asyncio < 1.4 leaves a fresh, unclosed event loop set after each async test; a sync
    test that calls asyncio.run() (the CLI does) drops it and the GC reports it as a leak
    (pytest-asyncio issue #724). Close it before each sync test."""
    if inspect.iscoroutinefunction(request.function):
        return
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:  # none is set: nothing to close
            return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    policy.set_event_loop(None)


def _conformance_module(path: Path) -> bool:
    return path.name.startswith("test_contract")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An engine marked `conformance_only` (the NATS cluster) runs the conformance modules only:
    its other parametrisations are deselected, not skipped (nothing is missing)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        setup = callspec.params.get("engine") if callspec is not None else None
        if isinstance(setup, EngineSetup) and setup.conformance_only and not _conformance_module(item.path):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=ENGINES, ids=lambda engine: engine.name)
def engine(request: pytest.FixtureRequest) -> EngineSetup:
    setup: EngineSetup = request.param
    setup.check()
    return setup


@pytest.fixture
async def url(engine: EngineSetup, tmp_path: Path) -> AsyncIterator[str]:
    async with engine.storage(tmp_path) as storage_url:
        yield storage_url


@pytest.fixture
def clock(engine: EngineSetup) -> FakeClock | None:
    return FakeClock() if engine.local_clock else None


@pytest.fixture
def time_machine(clock: FakeClock | None) -> TimeMachine:
    return TimeMachine(clock)


@pytest.fixture
async def make_app(url: str, clock: FakeClock | None) -> AsyncIterator[AppFactory]:
    """Make apps on the test's storage (all share it); each is closed at the end of the test."""
    apps: list[conveyor.App] = []

    async def make(*, real_clock: bool = False, **options: object) -> conveyor.App:
        options.setdefault("limits", TEST_LIMITS)
        app = conveyor.App(url, clock=None if real_clock else clock, **options)  # type: ignore[arg-type]
        apps.append(app)
        await app.connect()
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def app(make_app: AppFactory) -> conveyor.App:
    return await make_app()
