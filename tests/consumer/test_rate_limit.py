"""Consumer rate limits (`max_rate`, issue 32), on every engine: a worker leases no faster than
its rate across its batches; with `max_rate_scope="global"` every worker of the queue together.

The checks are tolerant: a token bucket can never hand out more than its size plus the rate
times the time it ran, so the upper bound cannot flake; the lower bound only asks that the
consumer kept moving. The measured rate is printed (speed itself belongs in conveyor/bench)."""

from __future__ import annotations

import asyncio
import time

import pytest

import conveyor
from conveyor.consumer.rate import RateScope
from conveyor.errors import ConveyorValueError, LimitExceeded
from conveyor.limits import parse_rate
from tests.support.apps import AppFactory
from tests.support.engines import EngineSetup

RATE = 20.0  # messages a second
RUN_SECONDS = 2.5
BATCH = 5  # the bucket holds min(batch, one second of the rate) = 5 tokens


async def run_for(apps: list[conveyor.App], seconds: float) -> float:
    """Run every app's consumers for `seconds`; returns how long they ran."""
    stop = asyncio.Event()
    started = time.monotonic()
    running = [asyncio.create_task(app.run_consumers(stop=stop)) for app in apps]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*running)
    return time.monotonic() - started


def register(app: conveyor.App, handled: list[int], scope: RateScope = "process") -> None:
    @app.consumer(
        "jobs", max_batch_size=BATCH, max_batch_timeout=0.2, max_rate=f"{RATE:g}/s", max_rate_scope=scope
    )
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)


async def test_a_rate_limited_worker_leases_no_faster_than_its_rate(
    make_app: AppFactory, engine: EngineSetup
) -> None:
    app = await make_app(real_clock=True)
    await app.queue("jobs").send_batch(list(range(100)))
    await app.queue("jobs").send_batch(list(range(100, 200)))
    handled: list[int] = []
    register(app, handled)
    ran = await run_for([app], RUN_SECONDS)
    print(
        f"{engine.name}: {len(handled)} handled in {ran:.2f} s ({len(handled) / ran:.1f}/s; limit {RATE:g}/s)"
    )
    assert len(handled) <= BATCH + RATE * ran
    assert len(handled) >= 10  # it kept moving
    assert (await app.queue("jobs").stats()).total == 200 - len(handled)


async def test_a_global_rate_is_shared_by_every_worker_of_the_queue(
    make_app: AppFactory, engine: EngineSetup
) -> None:
    if engine.name in ("memory", "sqlite"):
        pytest.skip("the global scope needs a server every worker shares")
    apps = [await make_app(real_clock=True) for _ in range(3)]
    await apps[0].queue("jobs").send_batch(list(range(100)))
    await apps[0].queue("jobs").send_batch(list(range(100, 200)))
    handled: list[int] = []
    for app in apps:
        register(app, handled, "global")
    ran = await run_for(apps, RUN_SECONDS)
    print(f"{engine.name}: 3 workers, {len(handled)} handled in {ran:.2f} s ({len(handled) / ran:.1f}/s)")
    # one bucket for the three: per process they could take three times as many
    assert len(handled) <= BATCH + RATE * ran
    assert len(handled) >= 10


async def test_the_global_scope_is_refused_where_no_server_is_shared(
    make_app: AppFactory, engine: EngineSetup
) -> None:
    if engine.name not in ("memory", "sqlite"):
        pytest.skip("this engine keeps shared rate limits")
    app = await make_app()
    with pytest.raises(ConveyorValueError, match="max_rate_scope"):
        app.consumer("jobs", max_rate="10/s", max_rate_scope="global")


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("100/s", 100.0), ("600/m", 10.0), ("36 / hour", 0.01), (2.5, 2.5), ("0.5/sec", 0.5)],
)
def test_rates_are_read_per_second_minute_or_hour(text: str | float, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "10/d", "-1/s", "0/s", "fast", 0, 2_000_000, float("nan"), True])
def test_bad_rates_are_refused_naming_max_rate(text: object) -> None:
    app = conveyor.App("memory://")
    with pytest.raises(LimitExceeded, match="max_rate"):
        app.consumer("jobs", max_rate=text)  # type: ignore[arg-type]
    with pytest.raises(LimitExceeded, match="max_rate_scope"):
        app.consumer("jobs", max_rate="1/s", max_rate_scope="everywhere")  # type: ignore[arg-type]
