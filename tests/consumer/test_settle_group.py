"""Settle coalescing (conveyor/consumer/settle_group.py) on every engine: batches that finish while
a settle is under way share the next engine call, and each still gets its own result."""

from __future__ import annotations

import asyncio
import logging

import pytest

import conveyor
from conveyor.consumer.settle_group import SettleGroup
from conveyor.core.ids import new_message_id
from conveyor.testing import drain
from conveyor.types import DeadLetter, Retry, Settlement, SettleResult
from tests.support.apps import AppFactory
from tests.support.engines import EngineSetup


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


def dead_letter(lease_id: str, queue: str) -> DeadLetter:
    return DeadLetter(lease_id, new_message_id(), "it failed", queue, 1)


async def test_a_dead_letter_to_a_deleted_queue_does_not_undo_the_acks_settled_with_it(
    engine: EngineSetup, make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app(auto_create=False)
    await app.create_queue("jobs")
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send_batch(list(range(6)))
    leases = [m.lease_id for m in await app.backend.lease_many("jobs", 6, 60)]
    # deleted by another process (this App still knows the queue; two memory:// Apps share nothing)
    other = app if engine.name == "memory" else await make_app()
    await other.delete_queue("jobs-dlq")
    group = SettleGroup(app.core, "jobs")
    caplog.set_level(logging.INFO, logger="conveyor")

    first, second, third = await asyncio.gather(
        group.settle(Settlement(acks=leases[0:2])),
        group.settle(Settlement(acks=[leases[2]], dead_letters=[dead_letter(leases[3], "jobs-dlq")])),
        group.settle(Settlement(acks=leases[4:5], dead_letters=[dead_letter(leases[5], "jobs-dlq")])),
    )

    assert first == SettleResult(2, 0, 0, [])
    assert second == SettleResult(1, 1, 0, [], held=[leases[3]])  # retried later, not moved
    assert third == SettleResult(1, 1, 0, [], held=[leases[5]])
    [left_a, left_b] = await app.queue("jobs").peek(10)  # the acked ones are gone
    assert {left_a.id, left_b.id} == {leases[3].split(".")[0], leases[5].split(".")[0]}
    assert not left_a.leased and not left_b.leased  # waiting for the next try, not lost
    stats = await app.queue("jobs").stats()
    assert (stats.delayed, stats.backlog) == (2, 0)  # retried after the interval, not at once
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "jobs-dlq" in r.getMessage()]
    assert len(errors) == 1  # one line for both, whatever the number of messages
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_deleted_dead_letter_queue_is_created_again_when_the_app_creates_queues(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send_batch(list(range(3)))
    leases = [m.lease_id for m in await app.backend.lease_many("jobs", 3, 60)]
    await app.delete_queue("jobs-dlq")
    group = SettleGroup(app.core, "jobs")

    first, second = await asyncio.gather(
        group.settle(Settlement(acks=leases[0:1])),
        group.settle(Settlement(acks=[leases[1]], dead_letters=[dead_letter(leases[2], "jobs-dlq")])),
    )

    assert first == SettleResult(1, 0, 0, [])
    assert second == SettleResult(1, 0, 1, [])
    assert (await app.queue("jobs").stats()).total == 0
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None and dead.dead_letter.error == "it failed"
