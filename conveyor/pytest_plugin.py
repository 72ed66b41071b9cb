"""conveyor's pytest plugin (loaded by pytest through the `pytest11` entry point when conveyor is
installed): fixtures for testing consumers on the memory engine with a FakeClock.

    async def test_welcome_email(conveyor_app, conveyor_drain, conveyor_sent):
        register_consumers(conveyor_app)                 # your code's consumers, on this App
        await conveyor_app.queue("signups").send({"email": "ada@example.com"})
        await conveyor_drain()
        assert await conveyor_sent("emails") == [{"to": "ada@example.com"}]

The async fixture needs pytest-asyncio (`pip install 'conveyor[pytest]'`); without it, using
`conveyor_app` fails with a message saying so, and nothing else changes in your test run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest

from conveyor.app import App
from conveyor.testing import DEFAULT_DRAIN_TIMEOUT, FakeClock, drain, sent

# The engine of `conveyor_app` unless a conftest overrides `conveyor_url`.
DEFAULT_TEST_URL = "memory://"


class Drain(Protocol):
    def __call__(
        self, *, timeout: float = DEFAULT_DRAIN_TIMEOUT, queues: list[str] | None = None
    ) -> Awaitable[int]: ...


@pytest.fixture
def conveyor_url() -> str:
    """The engine URL of `conveyor_app`: `memory://`. Override it in a conftest.py to run the same
    tests on SQLite (`f"sqlite:///{tmp_path / 'test.db'}"`), which obeys `conveyor_clock` too."""
    return DEFAULT_TEST_URL


@pytest.fixture
def conveyor_clock() -> FakeClock:
    """A FakeClock, the time of `conveyor_app`: `conveyor_clock.advance(60)` releases what a
    minute's delays, retry delays and leases held back, at once."""
    return FakeClock()


@pytest.fixture
def conveyor_drain(conveyor_app: App) -> Drain:
    """`await conveyor_drain()` runs `conveyor_app`'s consumers (and its lifespan) until their
    queues hold nothing ready or in flight, and returns how many messages they handled
    (`conveyor.testing.drain`)."""

    def run(*, timeout: float = DEFAULT_DRAIN_TIMEOUT, queues: list[str] | None = None) -> Awaitable[int]:
        return drain(conveyor_app, timeout=timeout, queues=queues)

    return run


@pytest.fixture
def conveyor_sent(conveyor_app: App) -> Callable[[str], Awaitable[list[Any]]]:
    """`await conveyor_sent("emails")`: the bodies of the messages in queue `emails` of
    `conveyor_app` now (waiting, delayed or leased), oldest first; [] for a queue never used
    (`conveyor.testing.sent`)."""

    def bodies(queue: str) -> Awaitable[list[Any]]:
        return sent(conveyor_app, queue)

    return bodies


try:
    import pytest_asyncio
except ImportError:  # the fixture says what is missing when a test asks for it

    @pytest.fixture
    def conveyor_app(conveyor_url: str, conveyor_clock: FakeClock) -> App:
        """An App on `conveyor_url` with `conveyor_clock` (needs pytest-asyncio)."""
        pytest.fail("conveyor_app needs pytest-asyncio: pip install 'conveyor[pytest]'", pytrace=False)

else:

    @pytest_asyncio.fixture
    async def conveyor_app(conveyor_url: str, conveyor_clock: FakeClock) -> AsyncIterator[App]:
        """An App on `conveyor_url` (default `memory://`) whose time is `conveyor_clock`, closed
        after the test. Register your consumers on it, or override this fixture to build your own
        App on `conveyor_url` with `clock=conveyor_clock`."""
        app = App(conveyor_url, clock=conveyor_clock)
        try:
            yield app
        finally:
            await app.close()
