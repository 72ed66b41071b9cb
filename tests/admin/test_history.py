"""QueueHistory: the last hour of every queue's figures, read by a sampler, never per page view."""

from __future__ import annotations

import asyncio

import pytest

import conveyor
from conveyor.admin import QueueHistory
from conveyor.testing import FakeClock
from tests.support.polling import eventually


async def test_rates_are_the_change_of_a_queue_and_its_dead_letter_queue_between_readings() -> None:
    clock = FakeClock()
    async with conveyor.App("memory://", clock=clock) as app:
        jobs, dlq = app.queue("jobs"), app.queue("jobs-dlq")
        await jobs.send_batch(list(range(5)))
        await dlq.send("x")
        history = QueueHistory(app)
        await history.sample()
        clock.advance(10)
        await jobs.send_batch(list(range(30)))  # +30 in 10 s
        await dlq.send_batch(["y", "z"])  # 2 dead letters in 10 s
        await history.sample()
        clock.advance(10)
        await jobs.purge()  # 35 gone in 10 s
        await history.sample()
        first, second, third = history.points("jobs", "jobs-dlq")
    assert (first.net_in, first.net_out, first.dead_lettered) == (None, None, None)
    assert (first.backlog, second.backlog, third.backlog) == (5, 35, 0)
    assert (second.net_in, second.net_out, second.dead_lettered) == (3.0, 0.0, 0.2)
    assert (third.net_in, third.net_out, third.dead_lettered) == (0.0, 3.5, 0.0)


async def test_readings_older_than_the_history_are_dropped() -> None:
    clock = FakeClock()
    async with conveyor.App("memory://", clock=clock) as app:
        await app.create_queue("jobs")
        history = QueueHistory(app, interval_seconds=10, keep_seconds=30)
        for _ in range(6):
            await history.sample()
            clock.advance(10)
        times = [point.at for point in history.points("jobs")]
    assert len(times) == 4 and times[-1] - times[0] == 30


async def test_a_queue_created_later_starts_its_rates_at_its_second_reading() -> None:
    clock = FakeClock()
    async with conveyor.App("memory://", clock=clock) as app:
        await app.create_queue("old")
        history = QueueHistory(app)
        await history.sample()
        clock.advance(5)
        await app.queue("new").send(1)
        await history.sample()
        assert [p.net_in for p in history.points("new")] == [None]
        assert history.points("missing") == []


async def test_the_sampler_reads_in_the_background_until_closed() -> None:
    async with conveyor.App("memory://") as app:
        await app.queue("jobs").send(1)
        history = QueueHistory(app, interval_seconds=0.01, keep_seconds=60)
        history.start()
        await eventually(lambda: len(history.readings()) >= 3, "three readings are taken")
        await history.close()
        taken = len(history.readings())
        await asyncio.sleep(0.05)
        assert len(history.readings()) == taken
        assert (await history.latest()).stats["jobs"].backlog == 1


@pytest.mark.parametrize(("interval", "keep"), [(0, 60), (-1, 60), (10, 5)])
async def test_a_bad_interval_or_span_is_refused(interval: float, keep: float) -> None:
    async with conveyor.App("memory://") as app:
        with pytest.raises(ValueError, match=r"interval|history"):
            QueueHistory(app, interval_seconds=interval, keep_seconds=keep)
