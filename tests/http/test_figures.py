"""Pulls and /metrics answer from queue figures read in the background: however long the queue, a
request never counts it (one engine is enough: the caching is the HTTP layer's)."""

from __future__ import annotations

from typing import Any

import pytest

import conveyor
from conveyor.producer import Queue
from conveyor.types import QueueStats
from tests.http.conftest import client_for, result
from tests.http.test_guards import samples
from tests.support.polling import eventually

WAIT_SECONDS = 30.0


@pytest.fixture
def stats_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queues whose stats were read (the engine is still called: this only notes the calls)."""
    reads: list[str] = []
    original = Queue.stats

    async def noted(self: Queue) -> QueueStats:
        reads.append(self.name)
        return await original(self)

    monkeypatch.setattr(Queue, "stats", noted)
    return reads


async def pull_count(client: Any) -> int:
    pulled = result(await client.post("/queues/jobs/messages/pull", json={"batch_size": 1}))
    count: int = pulled["message_backlog_count"]
    return count


async def test_pulls_do_not_count_the_queue(sqlite_app: conveyor.App, stats_reads: list[str]) -> None:
    await sqlite_app.create_queue("jobs")
    await sqlite_app.queue("jobs").send_batch(list(range(100)))
    # no dashboard sampler: only the pulls' and the scrapes' readings are counted here
    async with client_for(sqlite_app, stats_refresh_seconds=3_600, dashboard_sample_seconds=None) as client:
        counts = [await pull_count(client) for _ in range(50)]
        cf = "/client/v4/accounts/a/queues/jobs/messages/pull"
        for _ in range(10):
            result(await client.post(cf, json={"batch_size": 1}))
        for _ in range(5):
            assert (await client.get("/metrics")).status_code == 200
    assert counts == [100] * 50  # the first reading, not a count per pull
    assert stats_reads == ["jobs", "jobs"]  # once for the pulls, once for the first scrape's list


async def test_stale_figures_are_read_again_in_the_background(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    await sqlite_app.queue("jobs").send_batch([1, 2, 3])
    async with client_for(sqlite_app, stats_refresh_seconds=0.05) as client:
        assert await pull_count(client) == 3
        await sqlite_app.queue("jobs").send_batch([4, 5, 6, 7, 8])

        async def new_reading_shown() -> bool:
            count = await pull_count(client)
            assert count in (3, 8), count  # the last reading until a new one is in
            return count == 8

        # the reading is the server's own, in its own time
        await eventually(new_reading_shown, "a pull shows the new reading", WAIT_SECONDS)


async def test_metrics_gauges_follow_the_queues_in_the_background(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app, stats_refresh_seconds=0.05) as client:
        first = samples((await client.get("/metrics")).text)
        assert first["conveyor_queue_backlog", "jobs", None] == 0
        await sqlite_app.create_queue("more")
        await sqlite_app.queue("more").send_batch([1, 2])
        found: dict[tuple[str, str | None, str | None], float] = {}

        async def more_is_listed() -> bool:
            found.update(samples((await client.get("/metrics")).text))
            return ("conveyor_queue_backlog", "more", None) in found

        await eventually(more_is_listed, "/metrics lists queue 'more'", WAIT_SECONDS)
        assert found["conveyor_queue_backlog", "more", None] == 2


async def test_a_deleted_queue_is_forgotten(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app, stats_refresh_seconds=3_600) as client:
        assert await pull_count(client) == 0
        result(await client.delete("/queues/jobs"))
        response = await client.post("/queues/jobs/messages/pull")
        assert response.status_code == 404
        metrics = samples((await client.get("/metrics")).text)
        assert ("conveyor_queue_backlog", "jobs", None) not in metrics


async def test_a_purge_is_seen_at_once(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    await sqlite_app.queue("jobs").send_batch([1, 2, 3])
    async with client_for(sqlite_app, stats_refresh_seconds=3_600) as client:
        assert await pull_count(client) == 3
        result(await client.post("/queues/jobs/purge"))
        assert await pull_count(client) == 0
