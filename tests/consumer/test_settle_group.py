"""Settle coalescing (conveyor/consumer/settle_group.py) on every engine: batches that finish while
a settle is under way share the next engine call, and each still gets its own result."""

from __future__ import annotations

import asyncio

import pytest

import conveyor
from conveyor.consumer.settle_group import SettleGroup
from conveyor.testing import drain
from conveyor.types import Retry, Settlement, SettleResult
from tests.support.apps import AppFactory


def count_settles(app: conveyor.App, monkeypatch: pytest.MonkeyPatch, *, pause: float) -> list[int]:
    """Wrap the engine's settle so that each call takes at least `pause` seconds (as over a
    network), then writes for real; returns the sizes of its calls."""
    sizes: list[int] = []
    settle = app.core.settle

    async def counted(queue: str, settlement: Settlement) -> SettleResult:
        sizes.append(len(settlement.acks) + len(settlement.retries) + len(settlement.dead_letters))
        await asyncio.sleep(pause)
        return await settle(queue, settlement)

    monkeypatch.setattr(app.core, "settle", counted)
    return sizes


async def test_batches_waiting_for_a_settle_share_the_next_one_and_keep_their_own_results(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    await app.ensure_queue("jobs")
    await app.queue("jobs").send_batch(list(range(9)))
    leased = await app.backend.lease_many("jobs", 9, 60)
    leases = [m.lease_id for m in leased]
    sizes = count_settles(app, monkeypatch, pause=0.05)
    group = SettleGroup(app.core, "jobs")
    unknown = leases[3].rpartition(".")[0] + ".ffffffffffffffffffffffffffffffff"

    first, second, third = await asyncio.gather(
        group.settle(Settlement(acks=leases[0:3])),
        group.settle(Settlement(acks=[leases[3], unknown], retries=[Retry(leases[4])])),
        group.settle(Settlement(acks=leases[5:9])),
    )

    assert sizes == [3, 7]  # the first alone, then the two that waited for it, together
    assert first == SettleResult(3, 0, 0, [])
    assert second == SettleResult(1, 1, 0, [unknown])  # only its own stale lease
    assert third == SettleResult(4, 0, 0, [])
    stats = await app.queue("jobs").stats()
    assert (stats.total, stats.backlog) == (1, 1)  # the retried one, back in the queue


async def test_a_consumer_at_batch_size_1_settles_a_backlog_in_fewer_calls_than_batches(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app(real_clock=True)
    sizes = count_settles(app, monkeypatch, pause=0.005)
    handled: list[int] = []

    @app.consumer("jobs", max_batch_size=1, max_concurrency=10, max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        handled.extend(message.body for message in batch.messages)

    await app.queue("jobs").send_batch(list(range(100)))
    async with asyncio.timeout(30):
        assert await drain(app) == 100
    assert sorted(handled) == list(range(100))
    assert sum(sizes) == 100
    assert len(sizes) < 100  # batches that finished together were settled together
    assert (await app.queue("jobs").stats()).total == 0
