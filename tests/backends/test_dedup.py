"""Deduplication (docs/semantics.md, "Deduplication"), the same on every engine in ENGINES: a send
naming a dedup id its queue saw within the queue's dedup window stores nothing and returns the
first message's id; atomic under concurrent senders, in one process and across processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

import conveyor
from conveyor.errors import InvalidDedupId, LimitExceeded
from conveyor.limits import DEFAULT_DEDUP_WINDOW_SECONDS, MAX_DEDUP_ID_LENGTH
from tests.support.apps import AppFactory, TimeMachine
from tests.support.engines import EngineSetup

# How long the racing processes may take in all (a bound for a failing run, not a speed check).
RACE_TIMEOUT_SECONDS = 120


async def test_a_second_send_with_the_same_dedup_id_returns_the_first_id_and_stores_nothing(
    app: conveyor.App,
) -> None:
    orders = app.queue("orders")
    first = await orders.send({"order": 7}, dedup_id="order-7")
    again = await orders.send({"order": 7, "again": True}, dedup_id="order-7")
    other = await orders.send({"order": 8}, dedup_id="order-8")
    plain = await orders.send({"order": 9})
    assert again == first
    assert len({first, other, plain}) == 3
    stored = {m.id: m.body for m in await orders.peek(10)}
    assert stored == {first: {"order": 7}, other: {"order": 8}, plain: {"order": 9}}


async def test_a_consumed_message_still_holds_its_dedup_id_for_the_window(app: conveyor.App) -> None:
    orders = app.queue("orders")
    first = await orders.send({"order": 7}, dedup_id="order-7")
    [pulled] = await orders.pull(10)
    await orders.ack([pulled.lease_id])
    assert await orders.send({"order": 7}, dedup_id="order-7") == first
    assert (await orders.stats()).total == 0


async def test_send_batch_deduplicates_against_earlier_sends_and_within_itself(app: conveyor.App) -> None:
    orders = app.queue("orders")
    earlier = await orders.send("a", dedup_id="a")
    ids = await orders.send_batch(
        [
            conveyor.SendRequest("a again", dedup_id="a"),
            conveyor.SendRequest("b", dedup_id="b"),
            "no dedup id",
            conveyor.SendRequest("b again", dedup_id="b"),
        ]
    )
    assert ids[0] == earlier
    assert ids[3] == ids[1] != ids[2]
    stored = {m.id: m.body for m in await orders.peek(10)}
    assert stored == {earlier: "a", ids[1]: "b", ids[2]: "no dedup id"}


async def test_dedup_ids_are_per_queue(app: conveyor.App) -> None:
    first = await app.queue("orders").send(1, dedup_id="same")
    second = await app.queue("invoices").send(2, dedup_id="same")
    assert first != second
    assert (await app.queue("invoices").stats()).total == 1


async def test_a_dedup_id_is_free_again_once_the_window_has_passed(
    app: conveyor.App, time_machine: TimeMachine
) -> None:
    await app.create_queue("orders", dedup_window_seconds=1)
    orders = app.queue("orders")
    first = await orders.send(1, dedup_id="order-7")
    await time_machine.advance(1.5)
    second = await orders.send(2, dedup_id="order-7")
    assert second != first
    assert await orders.send(3, dedup_id="order-7") == second
    assert sorted(m.body for m in await orders.peek(10)) == [1, 2]


async def test_a_window_of_0_turns_deduplication_off(app: conveyor.App) -> None:
    await app.create_queue("orders", dedup_window_seconds=0)
    orders = app.queue("orders")
    ids = [await orders.send(n, dedup_id="same") for n in range(2)]
    ids += await orders.send_batch([conveyor.SendRequest(n, dedup_id="same") for n in (2, 3)])
    assert len(set(ids)) == 4
    assert (await orders.stats()).total == 4


async def test_the_dedup_window_is_a_queue_setting(app: conveyor.App) -> None:
    created = await app.create_queue("orders")
    assert created.settings.dedup_window_seconds == DEFAULT_DEDUP_WINDOW_SECONDS
    updated = await app.update_queue("orders", dedup_window_seconds=60)
    assert updated.settings.dedup_window_seconds == 60
    assert (await app.get_queue("orders")).settings.dedup_window_seconds == 60
    await app.update_queue("orders", delivery_delay=5)  # other changes keep it
    assert (await app.get_queue("orders")).settings.dedup_window_seconds == 60
    with pytest.raises(LimitExceeded, match="dedup_window_seconds"):
        await app.create_queue("invoices", dedup_window_seconds=-1)
    with pytest.raises(LimitExceeded, match="dedup_window_seconds"):
        await app.update_queue("orders", dedup_window_seconds=10**6)
    assert (await app.get_queue("orders")).settings.dedup_window_seconds == 60


@pytest.mark.parametrize("bad", ["", "has space", "é", "x" * (MAX_DEDUP_ID_LENGTH + 1), "tab\t", 7, b"bytes"])
async def test_a_bad_dedup_id_is_refused_and_nothing_is_stored(app: conveyor.App, bad: object) -> None:
    await app.create_queue("orders")
    orders = app.queue("orders")
    with pytest.raises(InvalidDedupId):
        await orders.send(1, dedup_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidDedupId):
        await orders.send_batch([conveyor.SendRequest(1), conveyor.SendRequest(2, dedup_id=bad)])  # type: ignore[arg-type]
    assert (await orders.stats()).total == 0


async def test_the_longest_dedup_id_is_accepted(app: conveyor.App) -> None:
    longest = "~" * MAX_DEDUP_ID_LENGTH
    orders = app.queue("orders")
    first = await orders.send(1, dedup_id=longest)
    assert await orders.send(2, dedup_id=longest) == first


async def test_concurrent_senders_in_one_process_store_a_dedup_id_once(
    engine: EngineSetup, make_app: AppFactory
) -> None:
    app = await make_app()
    # its own connections (two memory:// Apps share nothing: there, the one App)
    other = app if engine.name == "memory" else await make_app()
    await app.create_queue("orders")
    sends = [
        (app if n % 2 else other).queue("orders").send({"n": n}, dedup_id=f"order-{n % 5}") for n in range(40)
    ]
    ids = await asyncio.gather(*sends)
    assert len(set(ids)) == 5
    assert (await app.queue("orders").stats()).total == 5


RACER = textwrap.dedent(
    """
    import asyncio, json, sys
    import conveyor

    async def main(url, count):
        async with conveyor.App(url) as app:
            orders = app.queue("orders")
            ids = await asyncio.gather(
                *(orders.send({"n": n, "by": sys.argv[3]}, dedup_id=f"race-{n}") for n in range(count))
            )
        print(json.dumps(ids))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_two_processes_racing_the_same_dedup_ids_store_each_once(
    engine: EngineSetup, url: str, app: conveyor.App
) -> None:
    if engine.name == "memory":
        pytest.skip("memory:// lives in one process")
    await app.create_queue("orders")  # both racers find it: the race is on the dedup ids alone
    count = 50
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", RACER, url, str(count), name, stdout=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    async with asyncio.timeout(RACE_TIMEOUT_SECONDS):
        outputs = [await racer.communicate() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    first, second = (json.loads(stdout) for stdout, _ in outputs)
    assert first == second  # both were told the id of the one message stored per dedup id
    stored = await app.queue("orders").peek(1_000)
    assert len(stored) == count
    assert sorted(m.id for m in stored) == sorted(first)


async def test_a_queue_deleted_and_made_again_forgets_its_dedup_ids(app: conveyor.App) -> None:
    await app.create_queue("orders")
    first = await app.queue("orders").send(1, dedup_id="order-7")
    await app.delete_queue("orders")
    await app.create_queue("orders")
    second = await app.queue("orders").send(2, dedup_id="order-7")
    assert second != first
    assert [m.body for m in await app.queue("orders").peek(10)] == [2]
