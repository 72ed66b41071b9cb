"""The restaurant: parts of one program that talk through an in-process event bus, not to each other.

The front desk publishes orders; the kitchen subscribes to food orders and the bar to drink
orders; each publishes ORDER_UP when a plate or glass is ready, and the front desk serves it.
At closing time the front desk publishes SHUTDOWN, which ends the kitchen and the bar; closing
the bus ends the last listener (a tracer that subscribed to everything with "*").

Run it: `python examples/restaurant.py`.
"""

from __future__ import annotations

import asyncio
import collections

from conveyor import EventBus

ORDERS = [(1, "burger"), (1, "lemonade"), (2, "salad"), (3, "soup"), (3, "beer")]
DRINKS = {"lemonade", "beer"}
PREPARATION_SECONDS = 0.02


async def front_desk(bus: EventBus, opening: asyncio.Barrier) -> None:
    served = 0
    async with bus.subscribe("ORDER_UP") as ready_orders:
        await opening.wait()
        for table, item in ORDERS:
            kind = "DRINK_ORDER" if item in DRINKS else "FOOD_ORDER"
            print(f"front desk: table {table} orders {item}")
            await bus.publish(kind, {"table": table, "item": item})
        async for event in ready_orders:
            served += 1
            plate = event.data
            print(f"front desk: {plate['item']} from the {plate['station']} to table {plate['table']}")
            if served == len(ORDERS):
                break
        print("front desk: closing time")
        await bus.publish("SHUTDOWN")
    print(f"front desk served {served} order(s); closed")


async def station(bus: EventBus, opening: asyncio.Barrier, name: str, order_type: str) -> int:
    """The kitchen or the bar: prepare every order of `order_type` until SHUTDOWN."""
    done = 0
    async with bus.subscribe(order_type, "SHUTDOWN") as orders:
        await opening.wait()
        async for event in orders:
            if event.type == "SHUTDOWN":
                break
            await asyncio.sleep(PREPARATION_SECONDS)
            done += 1
            await bus.publish("ORDER_UP", {**event.data, "station": name})
    return done


async def kitchen(bus: EventBus, opening: asyncio.Barrier) -> None:
    cooked = await station(bus, opening, "kitchen", "FOOD_ORDER")
    print(f"kitchen cooked {cooked} dish(es); closed")


async def bar(bus: EventBus, opening: asyncio.Barrier) -> None:
    poured = await station(bus, opening, "bar", "DRINK_ORDER")
    print(f"bar poured {poured} drink(s); closed")


async def tracer(bus: EventBus, opening: asyncio.Barrier) -> None:
    """Sees every event and where it came from; only `bus.close()` ends it."""
    by_source: collections.Counter[str] = collections.Counter()
    async with bus.subscribe("*") as everything:
        await opening.wait()
        async for event in everything:
            by_source[event.source.rpartition(":")[2]] += 1
    summary = ", ".join(f"{count} from {source}" for source, count in sorted(by_source.items()))
    print(f"trace: {sum(by_source.values())} events ({summary})")


async def main() -> None:
    bus = EventBus()
    opening = asyncio.Barrier(4)  # everyone subscribes before the first order is published
    async with asyncio.TaskGroup() as staff:
        staff.create_task(kitchen(bus, opening))
        staff.create_task(bar(bus, opening))
        staff.create_task(tracer(bus, opening))
        await staff.create_task(front_desk(bus, opening))
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
