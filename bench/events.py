"""Event bus figures: in-process publish→receive latency, and durable topic fan-out on SQLite.

python -m bench.events [--events 10000] [--publishes 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import conveyor
from conveyor.events import Subscriber

SUBSCRIBER_COUNTS = (1, 3, 10)
CONCURRENT_PUBLISHERS = 100


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def bus_latency(events: int) -> list[float]:
    """One event at a time: publish, then wait until the subscriber has it (µs per event)."""
    bus = conveyor.EventBus()
    received: asyncio.Queue[int] = asyncio.Queue()

    async def listen(subscriber: Subscriber) -> None:
        async for event in subscriber:
            received.put_nowait(time.perf_counter_ns() - event.data)

    latencies: list[float] = []
    async with bus.subscribe("PING") as subscriber:
        listener = asyncio.create_task(listen(subscriber))
        for _ in range(events):
            await bus.publish("PING", time.perf_counter_ns())
            latencies.append((await received.get()) / 1_000)
        await bus.close()
        await listener
    return latencies


async def bus_throughput(events: int, subscribers: int) -> float:
    """Events per second published in a burst while `subscribers` tasks read them all."""
    bus = conveyor.EventBus(maxsize=events)

    async def drain(subscriber: Subscriber) -> int:
        return len([event async for event in subscriber])

    async with contextlib.AsyncExitStack() as stack:
        subscriptions = [await stack.enter_async_context(bus.subscribe()) for _ in range(subscribers)]
        readers = [asyncio.create_task(drain(subscriber)) for subscriber in subscriptions]
        start = time.perf_counter()
        for n in range(events):
            await bus.publish("TICK", n)
        await bus.close()
        counts = await asyncio.gather(*readers)
        elapsed = time.perf_counter() - start
    assert counts == [events] * subscribers
    return events / elapsed


async def topic_fan_out(folder: Path, publishes: int, subscribers: int, concurrent: bool) -> float:
    """Publishes per second to a topic with `subscribers` subscription queues on a SQLite file."""
    url = f"sqlite:///{folder / f'fanout-{subscribers}-{concurrent}.db'}"
    async with conveyor.App(url) as app:
        for n in range(subscribers):
            await app.subscribe("orders", queue=f"subscriber-{n}")
        topic = app.topic("orders")
        body = {"type": "ORDER_UP", "table": 4, "dish": "soup", "notes": "x" * 100}
        start = time.perf_counter()
        if concurrent:
            per_task = publishes // CONCURRENT_PUBLISHERS

            async def publisher() -> None:
                for _ in range(per_task):
                    await topic.publish(body)

            await asyncio.gather(*(publisher() for _ in range(CONCURRENT_PUBLISHERS)))
            done = per_task * CONCURRENT_PUBLISHERS
        else:
            for _ in range(publishes):
                await topic.publish(body)
            done = publishes
        elapsed = time.perf_counter() - start
        assert topic.copies == done * subscribers
        stats = await app.queue("subscriber-0").stats()
        assert stats.backlog == done
    return done / elapsed


async def main(events: int, publishes: int) -> None:
    latencies = await bus_latency(events)
    print(f"EventBus publish→receive latency over {events:,} events, one at a time:")
    print(
        f"  p50 {percentile(latencies, 0.50):.1f} µs   p99 {percentile(latencies, 0.99):.1f} µs   "
        f"mean {statistics.fmean(latencies):.1f} µs"
    )
    for count in SUBSCRIBER_COUNTS:
        rate = await bus_throughput(events, count)
        print(f"  burst of {events:,} events to {count:>2} subscriber(s): {rate:>10,.0f} events/s published")
    print(f"\nDurable topic fan-out on SQLite (temp file, synchronous=full), {publishes:,} publishes:")
    print("  subscribers   sequential publish/s (copies/s)   100 concurrent publish/s (copies/s)")
    with tempfile.TemporaryDirectory() as folder:
        for count in SUBSCRIBER_COUNTS:
            one = await topic_fan_out(Path(folder), publishes, count, concurrent=False)
            many = await topic_fan_out(Path(folder), publishes, count, concurrent=True)
            print(
                f"  {count:>11}   {one:>10,.0f} ({one * count:>9,.0f})"
                f"            {many:>10,.0f} ({many * count:>9,.0f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--publishes", type=int, default=2_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.publishes))
