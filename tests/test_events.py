"""The in-process EventBus: fan-out, ordering, isolation of slow subscribers, shutdown, provenance."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

import conveyor
from conveyor import Event, EventBus, EventBusClosed
from conveyor.events import Subscriber

EXAMPLES = Path(__file__).parent.parent / "examples"


async def collect(subscriber: Subscriber) -> list[Event]:
    return [event async for event in subscriber]


async def test_each_subscriber_gets_every_event_in_publish_order() -> None:
    bus = EventBus()
    async with bus.subscribe() as first, bus.subscribe() as second:
        readers = [asyncio.create_task(collect(first)), asyncio.create_task(collect(second))]
        for n in range(500):
            await bus.publish("TICK", n)
        await bus.close()
        for reader in readers:
            assert [event.data for event in await reader] == list(range(500))


async def test_concurrent_publishers_keep_one_order_for_every_subscriber() -> None:
    bus = EventBus(maxsize=1, put_timeout=None)  # every publish waits for room: the hard case
    async with bus.subscribe() as first, bus.subscribe() as second:
        readers = [asyncio.create_task(collect(first)), asyncio.create_task(collect(second))]
        await asyncio.gather(*(bus.publish("TICK", n) for n in range(200)))
        await bus.close()
        orders = [[event.id for event in await reader] for reader in readers]
        assert len(orders[0]) == 200
        assert orders[0] == orders[1]


async def test_a_blocked_subscriber_does_not_delay_a_fast_one() -> None:
    bus = EventBus(maxsize=1, overflow="wait", put_timeout=None)
    async with bus.subscribe() as blocked, bus.subscribe(maxsize=100) as fast:
        await bus.publish("E", 0)  # the blocked subscriber's queue is now full
        publishing = asyncio.create_task(bus.publish("E", 1))
        assert [(await anext(fast)).data, (await anext(fast)).data] == [0, 1]
        assert not publishing.done()  # the publisher still waits for room at the blocked one
        assert (await anext(blocked)).data == 0
        await publishing
        assert (await anext(blocked)).data == 1
        assert blocked.dropped == fast.dropped == 0


async def test_a_stuck_subscriber_drops_and_counts_after_the_timeout_once_per_stall() -> None:
    bus = EventBus(maxsize=2, overflow="wait", put_timeout=0.01)
    async with bus.subscribe() as stuck, bus.subscribe(maxsize=100) as fast:
        for n in range(20):
            await bus.publish("E", n)
        assert stuck.dropped == 18
        assert fast.dropped == 0
        assert bus.dropped == 18
        bus.put_timeout = None  # were it waited for again, this publish would never return
        async with asyncio.timeout(10):
            await bus.publish("E", 20)
        assert stuck.dropped == 19
        assert (await anext(stuck)).data == 0  # room again: the next event is delivered
        await bus.publish("E", 21)
        await bus.close()
        assert [event.data for event in await collect(stuck)] == [1, 21]
        assert [event.data for event in await collect(fast)] == list(range(22))


async def test_a_slow_but_live_subscriber_under_wait_loses_nothing() -> None:
    bus = EventBus(maxsize=1, overflow="wait", put_timeout=None)
    async with bus.subscribe() as slow:

        async def read_slowly() -> list[int]:
            seen = []
            async for event in slow:
                await asyncio.sleep(0)
                seen.append(event.data)
            return seen

        reader = asyncio.create_task(read_slowly())
        for n in range(100):
            await bus.publish("E", n)
        await bus.close()
        assert await reader == list(range(100))
        assert slow.dropped == 0


async def test_drop_oldest_keeps_the_newest_events_and_never_waits() -> None:
    bus = EventBus(maxsize=3, overflow="drop_oldest", put_timeout=None)
    async with bus.subscribe() as idle:
        async with asyncio.timeout(10):  # a publish that waited would hang here: nobody reads
            for n in range(10):
                await bus.publish("E", n)
        assert idle.dropped == 7
        await bus.close()
        assert [event.data for event in await collect(idle)] == [7, 8, 9]


async def test_type_filters_and_star() -> None:
    bus = EventBus()
    async with (
        bus.subscribe("ORDER_UP") as kitchen,
        bus.subscribe("DRINK_UP", "SHUTDOWN") as bar,
        bus.subscribe("*") as star,
        bus.subscribe() as everything,
        bus.subscribe("ORDER_UP", "*") as star_and_type,
    ):
        for event_type in ("ORDER_UP", "DRINK_UP", "BILL", "SHUTDOWN"):
            await bus.publish(event_type)
        await bus.close()
        assert [e.type for e in await collect(kitchen)] == ["ORDER_UP"]
        assert [e.type for e in await collect(bar)] == ["DRINK_UP", "SHUTDOWN"]
        for subscriber in (star, everything, star_and_type):
            assert [e.type for e in await collect(subscriber)] == ["ORDER_UP", "DRINK_UP", "BILL", "SHUTDOWN"]


async def test_leaving_the_block_unsubscribes() -> None:
    bus = EventBus()
    async with bus.subscribe("A") as first:
        async with bus.subscribe("A") as second:
            assert len(bus.subscribers) == 2
        assert bus.subscribers == [first]
        await bus.publish("A", 1)
    assert bus.subscribers == []
    assert second.pending == 0
    assert [event.data async for event in second] == []
    await bus.publish("A", 2)  # nobody listens: not an error
    assert bus.published == 2


async def test_leaving_frees_a_publisher_waiting_for_room() -> None:
    bus = EventBus(maxsize=1, put_timeout=None)
    async with bus.subscribe() as leaving:
        await bus.publish("E", 0)
        publishing = asyncio.create_task(bus.publish("E", 1))
        await asyncio.sleep(0)
        assert not publishing.done()
    await publishing
    assert leaving.dropped == 0


async def test_close_ends_every_loop_after_the_events_published_before_it() -> None:
    bus = EventBus(maxsize=5)
    async with (
        bus.subscribe() as reading,
        bus.subscribe() as full_at_close,
        bus.subscribe("NEVER_PUBLISHED") as empty,
    ):
        readers = [asyncio.create_task(collect(s)) for s in (reading, empty)]
        for n in range(5):
            await bus.publish("E", n)
        await bus.close()
        await bus.close()  # idempotent
        seen, nothing = await asyncio.gather(*readers)
        assert [event.data for event in seen] == list(range(5))
        assert nothing == []
        assert [event.data for event in await collect(full_at_close)] == list(range(5))
        assert await collect(full_at_close) == []  # an ended iterator stays ended


async def test_close_waits_for_a_publish_under_way() -> None:
    bus = EventBus(maxsize=1, put_timeout=None)
    async with bus.subscribe() as subscriber:
        await bus.publish("E", 0)
        publishing = asyncio.create_task(bus.publish("E", 1))
        await asyncio.sleep(0)
        closing = asyncio.create_task(bus.close())
        assert [event.data for event in await collect(subscriber)] == [0, 1]
        await asyncio.gather(publishing, closing)


async def test_publish_after_close_raises() -> None:
    async with EventBus() as bus:
        pass
    assert bus.closed
    with pytest.raises(EventBusClosed, match="closed") as caught:
        await bus.publish("LATE", {})
    assert isinstance(caught.value, conveyor.ConveyorError)
    assert caught.value.code == "event_bus_closed"


async def test_subscribing_to_a_closed_bus_ends_at_once() -> None:
    bus = EventBus()
    await bus.close()
    async with bus.subscribe() as events:
        assert await collect(events) == []


async def publish_from_a_helper(bus: EventBus) -> Event:
    return await bus.publish("TRACED", {"n": 1})


async def test_events_record_their_source_and_a_debug_line_names_it(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    caplog.set_level(logging.DEBUG, logger="conveyor.events")
    async with bus.subscribe() as events:
        published = await publish_from_a_helper(bus)
        in_a_task = await asyncio.create_task(bus.publish("TRACED"))
        explicit = await bus.publish("TRACED", source="billing:close_table")
        received = await anext(events)
    assert received is published
    assert published.source == f"{__name__}:publish_from_a_helper"
    assert in_a_task.source == f"{__name__}:test_events_record_their_source_and_a_debug_line_names_it"
    assert explicit.source == "billing:close_table"
    assert f"from {__name__}:publish_from_a_helper" in caplog.text


async def test_events_are_frozen_with_unique_ids_and_utc_timestamps() -> None:
    bus = EventBus()
    first, second = await bus.publish("A", 1), await bus.publish("A", 2)
    assert first.id != second.id
    assert first.timestamp.tzinfo == dt.UTC
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.type = "B"  # type: ignore[misc]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overflow"):
        EventBus(overflow="drop_newest")  # type: ignore[arg-type]
    with pytest.raises(conveyor.LimitExceeded, match="maxsize"):
        EventBus(maxsize=0)
    with pytest.raises(conveyor.LimitExceeded, match="put_timeout"):
        EventBus(put_timeout=-1)


async def test_event_types_must_be_non_empty_strings() -> None:
    bus = EventBus()
    with pytest.raises(TypeError):
        await bus.publish("")
    with pytest.raises(TypeError):
        async with bus.subscribe(42):  # type: ignore[arg-type]
            pass


# -- the examples --------------------------------------------------------------------------------


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_restaurant_example_serves_everyone_and_shuts_down(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await load_example("restaurant", monkeypatch).main()
    out = capsys.readouterr().out
    assert "kitchen cooked 3 dish(es)" in out
    assert "bar poured 2 drink(s)" in out
    assert out.count("closed") == 3  # front desk, kitchen and bar each saw the shutdown


async def test_shared_resource_example_answers_every_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await load_example("shared_resource", monkeypatch).main()
    out = capsys.readouterr().out
    assert "served 33 request(s) on one connection" in out
    assert "total clicks: 30;" in out
