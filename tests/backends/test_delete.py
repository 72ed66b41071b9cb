"""Deleting one message by id (docs/semantics.md, "Deleting one message"), the same on every
engine in ENGINES: a ready, delayed or dead-lettered message goes at once and is never delivered;
a message under a live lease is refused with MessageLeased and nothing changes; an id the queue
does not hold is False."""

from __future__ import annotations

import asyncio

import pytest

import conveyor
from conveyor.testing import drain
from tests.support.apps import TimeMachine


async def test_a_ready_message_is_deleted_and_never_delivered(app: conveyor.App) -> None:
    orders = app.queue("orders")
    doomed = await orders.send({"order": 1, "pad": "x" * 100})
    kept = await orders.send({"order": 2})
    before = await orders.stats()
    assert await orders.delete(doomed) is True
    after = await orders.stats()
    assert (after.backlog, after.total) == (1, 1)
    assert after.bytes == before.bytes - len(b'{"order":1,"pad":"') - 100 - 2
    pulled = await orders.pull(10)
    assert [m.id for m in pulled] == [kept]


async def test_a_delayed_message_is_deleted_and_never_comes_due(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    orders = app.queue("orders")
    doomed = await orders.send("later", delay_seconds=1)
    assert (await orders.stats()).delayed == 1
    assert await orders.delete(doomed) is True
    assert (await orders.stats()).total == 0
    await time_machine.advance(1.5)
    assert await orders.pull(10) == []


async def test_a_leased_message_is_refused_and_keeps_its_lease(app: conveyor.App) -> None:
    orders = app.queue("orders")
    message_id = await orders.send("held")
    [pulled] = await orders.pull(1)
    with pytest.raises(conveyor.MessageLeased) as refused:
        await orders.delete(message_id)
    assert (refused.value.queue, refused.value.message_id) == ("orders", message_id)
    assert refused.value.code == "message_leased"
    assert (await orders.stats()).in_flight == 1
    acked = await orders.ack([pulled.lease_id])
    assert acked.ack_count == 1  # the lease was untouched: its consumer still settles it


async def test_a_message_whose_lease_expired_can_be_deleted(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    orders = app.queue("orders")
    message_id = await orders.send("abandoned")
    [pulled] = await orders.pull(1, visibility_timeout=0.2)
    await time_machine.advance(0.5)
    assert await orders.delete(message_id) is True
    assert (await orders.ack([pulled.lease_id])).ack_count == 0
    assert (await orders.stats()).total == 0


async def test_an_unknown_or_already_deleted_id_is_false_and_changes_nothing(app: conveyor.App) -> None:
    orders = app.queue("orders")
    kept = await orders.send("kept")
    doomed = await orders.send("doomed")
    assert await orders.delete(doomed) is True
    assert await orders.delete(doomed) is False
    assert await orders.delete("no-such-message") is False
    assert [m.id for m in await orders.peek()] == [kept]


async def test_an_id_of_another_queue_is_not_deleted(app: conveyor.App) -> None:
    message_id = await app.queue("orders").send("mine")
    await app.create_queue("invoices")
    assert await app.queue("invoices").delete(message_id) is False
    assert (await app.queue("orders").stats()).total == 1


async def test_delete_on_a_missing_queue_raises_queue_not_found(app: conveyor.App) -> None:
    with pytest.raises(conveyor.QueueNotFound):
        await app.queue("nowhere").delete("some-id")


async def test_a_dead_letter_is_deleted_from_its_dead_letter_queue(app: conveyor.App) -> None:
    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        batch.retry_all()

    await app.queue("jobs").send_batch(["poison", "also poison"])
    await drain(app)
    dlq = app.queue("jobs-dlq")
    dead = await dlq.peek()
    assert len(dead) == 2
    assert await dlq.delete(dead[0].id) is True
    assert [m.id for m in await dlq.peek()] == [dead[1].id]


async def test_delete_sync_from_a_thread_without_an_event_loop(app: conveyor.App) -> None:
    orders = app.queue("orders")
    message_id = await orders.send("from a script")
    assert await asyncio.to_thread(orders.delete_sync, message_id) is True
    assert await asyncio.to_thread(orders.delete_sync, message_id) is False
    assert (await orders.stats()).total == 0


async def test_deletes_racing_pulls_never_delete_a_delivered_message(app: conveyor.App) -> None:
    orders = app.queue("orders")
    ids = await orders.send_batch(list(range(60)))

    async def delete(message_id: str) -> str | None:
        try:
            return message_id if await orders.delete(message_id) else None
        except conveyor.MessageLeased:
            return None

    pulls = [orders.pull(10) for _ in range(6)]
    results = await asyncio.gather(*pulls, *(delete(message_id) for message_id in ids))
    pulled = {m.id for batch in results[: len(pulls)] for m in batch}  # type: ignore[union-attr]
    deleted = {message_id for message_id in results[len(pulls) :] if message_id is not None}
    assert not pulled & deleted  # a message went one way or the other, never both
    assert pulled | deleted == set(ids)  # and none was lost: a delete fails only on a leased one
    assert (await orders.stats()).total == len(pulled)
