"""Durable topics on every engine: fan-out by type, all or nothing, stored subscriptions."""

from __future__ import annotations

import asyncio
from typing import Literal

import pydantic
import pytest

import conveyor
from conveyor.testing import drain
from conveyor.topics import CoalescedRead
from tests.support.apps import AppFactory
from tests.support.engines import EngineSetup

ORDER = {"type": "ORDER_UP", "table": 4, "dish": "soup"}
DRINK = {"type": "DRINK_UP", "table": 4, "drink": "tea"}
BILL = {"type": "BILL", "table": 4, "total": 12.5}
UNTYPED = {"note": "no type at all"}


async def bodies(app: conveyor.App, queue: str) -> list[object]:
    return [message.body for message in await app.queue(queue).peek(100)]


async def restaurant(app: conveyor.App) -> None:
    await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    await app.subscribe("orders", queue="bar", types=["DRINK_UP", "ORDER_UP"])
    await app.subscribe("orders", queue="audit")  # every message, typed or not


async def test_fan_out_gives_each_subscription_exactly_its_matching_copies(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    orders = app.topic("orders")
    results = [await orders.publish(body) for body in (ORDER, DRINK, BILL, UNTYPED)]

    assert await bodies(app, "kitchen") == [ORDER]
    assert sorted(map(str, await bodies(app, "bar"))) == sorted(map(str, [ORDER, DRINK]))
    assert sorted(map(str, await bodies(app, "audit"))) == sorted(map(str, [ORDER, DRINK, BILL, UNTYPED]))
    assert [sorted(result.queues) for result in results] == [
        ["audit", "bar", "kitchen"],
        ["audit", "bar"],
        ["audit"],
        ["audit"],
    ]
    assert results[0].type == "ORDER_UP" and results[3].type is None
    # every copy is its own message, with its own id, in its own queue
    kitchen = await app.queue("kitchen").peek()
    assert [message.id for message in kitchen] == [results[0].ids["kitchen"]]
    assert len({message_id for result in results for message_id in result.ids.values()}) == 7
    assert (orders.published, orders.copies, orders.unrouted) == (4, 7, 0)


async def test_consumers_on_subscription_queues_get_the_copies(make_app: AppFactory) -> None:
    app = await make_app()
    seen: dict[str, list[object]] = {"kitchen": [], "bar": []}

    for queue in seen:

        @app.consumer(queue, max_batch_timeout=0)
        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env, queue: str = queue) -> None:
            seen[queue].extend(message.body for message in batch.messages)

    await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    await app.subscribe("orders", queue="bar", types=["DRINK_UP"])
    for body in (ORDER, DRINK, ORDER):
        await app.topic("orders").publish(body)
    assert await drain(app) == 3
    assert seen == {"kitchen": [ORDER, ORDER], "bar": [DRINK]}


async def test_a_failed_publish_writes_no_copy_anywhere(make_app: AppFactory) -> None:
    app = await make_app(auto_create=False)
    for queue in ("kitchen", "bar"):
        await app.create_queue(queue)
        await app.subscribe("orders", queue=queue)
    # a subscription to a queue that does not exist: the engine refuses the whole write
    await app.backend.add_subscription("orders", "ghost", None)
    orders = app.topic("orders")

    with pytest.raises(conveyor.QueueNotFound, match="ghost"):
        await orders.publish(ORDER)

    for queue in ("kitchen", "bar"):
        assert (await app.queue(queue).stats()).total == 0
    assert orders.published == 0
    assert await app.get_queue("kitchen")  # the queues themselves are untouched


async def test_with_auto_create_a_missing_subscription_queue_is_created(make_app: AppFactory) -> None:
    app = await make_app()
    await app.backend.add_subscription("orders", "late", None)
    result = await app.topic("orders").publish(ORDER)
    assert await bodies(app, "late") == [ORDER]
    assert result.queues == ["late"]


async def test_deleting_a_subscription_queue_removes_its_subscription(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    assert await app.delete_queue("bar")
    assert [s.queue for s in await app.list_subscriptions("orders")] == ["audit", "kitchen"]
    result = await app.topic("orders").publish(ORDER)
    assert sorted(result.queues) == ["audit", "kitchen"]
    assert "bar" not in [info.name for info in await app.list_queues()]


async def test_subscriptions_survive_a_restart(make_app: AppFactory, engine: EngineSetup) -> None:
    if engine.name == "memory":
        pytest.skip("memory:// keeps nothing across a restart")
    first = await make_app()
    await restaurant(first)
    await first.close()

    second = await make_app()
    assert len(await second.list_subscriptions("orders")) == 3
    result = await second.topic("orders").publish(ORDER)
    assert sorted(result.queues) == ["audit", "bar", "kitchen"]
    for queue in ("kitchen", "bar", "audit"):
        assert await bodies(second, queue) == [ORDER]


def sibling(app: conveyor.App, *, auto_create: bool = True) -> conveyor.App:
    """Another App on the same storage (on memory:// too), as another process would have."""
    return conveyor.App(backend=app.backend.sibling(), auto_create=auto_create, clock=app.clock)


async def test_a_subscription_made_by_another_app_applies_at_once(make_app: AppFactory) -> None:
    publisher = await make_app()
    orders = publisher.topic("orders")
    assert not await orders.publish(ORDER)
    async with sibling(publisher) as subscriber:
        await subscriber.subscribe("orders", queue="kitchen")
        assert (await orders.publish(ORDER)).queues == ["kitchen"]
        await subscriber.unsubscribe("orders", "kitchen")
        assert not await orders.publish(ORDER)


async def test_publishing_with_no_matching_subscription_is_counted_not_an_error(make_app: AppFactory) -> None:
    app = await make_app()
    orders = app.topic("orders")
    result = await orders.publish(ORDER)
    assert not result and len(result) == 0 and result.ids == {}

    await app.subscribe("orders", queue="bar", types=["DRINK_UP"])
    assert not await orders.publish(ORDER)  # a subscription, but not for this type
    assert not await orders.publish(UNTYPED)  # no type matches only unfiltered subscriptions
    assert (orders.published, orders.unrouted, orders.copies) == (3, 3, 0)
    assert app.topic("orders") is orders  # one handle per name, so the counters add up
    assert (await app.queue("bar").stats()).total == 0


async def test_subscribe_creates_the_queue_and_refuses_an_unknown_one_without_auto_create(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    subscription = await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    assert (subscription.topic, subscription.queue, subscription.types) == (
        "orders",
        "kitchen",
        ("ORDER_UP",),
    )
    assert await app.get_queue("kitchen")

    async with sibling(app, auto_create=False) as strict:
        with pytest.raises(conveyor.QueueNotFound):
            await strict.subscribe("orders", queue="nowhere")
        assert [s.queue for s in await strict.list_subscriptions()] == ["kitchen"]


async def test_subscribing_again_replaces_the_type_filter_and_unsubscribe_stops_copies(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    await app.subscribe("orders", queue="kitchen", types=["DRINK_UP", "DRINK_UP"])
    [subscription] = await app.list_subscriptions("orders")
    assert subscription.types == ("DRINK_UP",)
    assert not await app.topic("orders").publish(ORDER)

    assert await app.unsubscribe("orders", "kitchen")
    assert not await app.unsubscribe("orders", "kitchen")
    assert not await app.topic("orders").publish(DRINK)
    assert await app.get_queue("kitchen")  # unsubscribing keeps the queue


async def test_list_subscriptions_by_topic_or_all(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    await app.topic("payments").subscribe("audit", types=["*"])
    listed = [(s.topic, s.queue, s.types) for s in await app.list_subscriptions()]
    assert listed == [
        ("orders", "audit", None),
        ("orders", "bar", ("DRINK_UP", "ORDER_UP")),
        ("orders", "kitchen", ("ORDER_UP",)),
        ("payments", "audit", None),
    ]
    assert [s.topic for s in await app.topic("payments").subscriptions()] == ["payments"]


class OrderUp(pydantic.BaseModel):
    type: Literal["ORDER_UP"] = "ORDER_UP"
    table: int


async def test_a_model_body_is_routed_by_its_type_attribute(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    result = await app.topic("orders").publish(OrderUp(table=7))
    assert result.type == "ORDER_UP"
    assert await bodies(app, "kitchen") == [{"type": "ORDER_UP", "table": 7}]


async def test_text_bodies_and_delays_apply_to_every_copy(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    result = await app.topic("orders").publish("ORDER_UP", content_type="text", delay_seconds=60)
    assert result.queues == ["audit"]  # a text body has no type
    stats = await app.queue("audit").stats()
    assert (stats.delayed, stats.backlog) == (1, 0)


async def test_concurrent_publishes_each_reach_every_subscription(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    orders = app.topic("orders")
    await asyncio.gather(*(orders.publish({**ORDER, "n": n}) for n in range(50)))
    for queue in ("kitchen", "bar", "audit"):
        assert sorted(body["n"] for body in await bodies(app, queue)) == list(range(50))  # type: ignore[index]


async def test_publish_sync_from_code_without_an_event_loop(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    orders = app.topic("orders")
    result = await asyncio.to_thread(orders.publish_sync, DRINK)
    assert sorted(result.queues) == ["audit", "bar"]
    assert await bodies(app, "bar") == [DRINK]
    assert orders.published == 1


async def test_bad_input_is_refused_and_writes_nothing(make_app: AppFactory) -> None:
    app = await make_app(limits=conveyor.Limits(max_message_bytes=100, min_retention_seconds=1))
    await restaurant(app)
    orders = app.topic("orders")
    with pytest.raises(conveyor.MessageTooLarge):
        await orders.publish({**ORDER, "pad": "x" * 200})
    with pytest.raises(TypeError):
        await orders.publish({**ORDER, "when": object()})
    with pytest.raises(conveyor.LimitExceeded, match="delay_seconds"):
        await orders.publish(ORDER, delay_seconds=-1)
    assert (await app.queue("audit").stats()).total == 0

    with pytest.raises(conveyor.InvalidQueueName):
        app.topic("orders with spaces")
    with pytest.raises(conveyor.InvalidQueueName):
        await app.subscribe("orders", queue="bad/name")
    with pytest.raises(ValueError, match="empty"):
        await app.subscribe("orders", queue="kitchen", types=[])
    with pytest.raises(TypeError):
        await app.subscribe("orders", queue="kitchen", types="ORDER_UP")
    with pytest.raises(ValueError):
        await app.subscribe("orders", queue="kitchen", types=[""])
    assert (await app.list_subscriptions("orders"))[2].types == ("ORDER_UP",)  # kitchen unchanged


async def test_concurrent_publishes_share_subscription_reads(make_app: AppFactory) -> None:
    app = await make_app()
    await restaurant(app)
    reads = 0
    read = app.backend.list_subscriptions

    async def counting_read(topic: str | None = None) -> list[conveyor.Subscription]:
        nonlocal reads
        reads += 1
        return await read(topic)

    app.backend.list_subscriptions = counting_read  # type: ignore[method-assign]
    orders = app.topic("orders")
    await asyncio.gather(*(orders.publish(ORDER) for _ in range(50)))
    assert reads <= 2
    assert orders.copies == 150


async def test_a_shared_read_always_started_after_its_caller_asked() -> None:
    started: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        number, gate = reads, asyncio.get_running_loop().create_future()
        started.put_nowait(gate)
        await gate
        return number

    coalesced = CoalescedRead(read)
    async with asyncio.timeout(10):  # a read that never comes fails here instead of hanging
        first = asyncio.create_task(coalesced())
        gate = await started.get()  # read 1 is under way
        second = asyncio.create_task(coalesced())
        third = asyncio.create_task(coalesced())
        await asyncio.sleep(0)
        gate.set_result(None)
        assert await first == 1
        gate = await started.get()  # read 2 starts once read 1 is over, for both callers that waited
        late = asyncio.create_task(coalesced())  # asked after read 2 started: may not share it
        await asyncio.sleep(0)
        gate.set_result(None)
        assert (await second, await third) == (2, 2)
        (await started.get()).set_result(None)
        assert await late == 3
