"""The NATS engine under failure, with a producer and a consumer running flat out in this process:
the stream leader of a 3-node cluster (replicas=3) is SIGKILLed, or a single server is stopped
for 5 s. Every send that returned is delivered, a message is handled again only as a redelivery
after its lease, and producer and consumer carry on by themselves. Each test prints its figures
(run with -s to see them; docs/nats.md quotes them)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import conveyor
from conveyor.bench.nats_servers import NatsCluster, NatsServer, free_ports, nats_server_installed
from tests.support.polling import eventually
from tests.support.services import need

pytest.importorskip("nats", reason="the NATS engine needs: pip install 'conveyor[nats]'")

pytestmark = pytest.mark.slow

SENDERS = 20  # concurrent one-by-one senders (group-committed)
WARM_UP = 500  # messages handled before the fault
AFTER_RECOVERY = 1_000  # messages sent after the producer recovered, before it stops
VISIBILITY_TIMEOUT = 5.0  # short, so a redelivery after a lost outcome comes soon
# A bound so a broken engine fails the test rather than hanging it (not a speed target).
RECOVERY_LIMIT_SECONDS = 60.0


def check_nats_server() -> None:
    need("nats-server", nats_server_installed(), "install nats-server (apt-get install nats-server)")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    check_nats_server()
    started = NatsCluster(tmp_path)
    try:
        await started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    check_nats_server()
    started = NatsServer(tmp_path, "single", free_ports(1))
    try:
        started.start()
        await started.wait_for_jetstream()
        yield started
    finally:
        started.stop()


@dataclass
class Load:
    """A producer and a consumer on one queue, recording what returned and what was handled."""

    app: conveyor.App
    sent: dict[str, float] = field(default_factory=dict)  # id -> when its send returned
    send_errors: int = 0
    handled: list[tuple[str, int, float]] = field(default_factory=list)  # (id, attempts, when)
    stop_sending: asyncio.Event = field(default_factory=asyncio.Event)

    async def produce(self) -> None:
        queue = self.app.queue("load")
        n = 0
        while not self.stop_sending.is_set():
            n += 1
            try:
                message_id = await queue.send({"n": n})
            except conveyor.ConveyorError:
                self.send_errors += 1
                await asyncio.sleep(0.1)
                continue
            self.sent[message_id] = time.monotonic()

    def carried_on_after(self, moment: float) -> bool:
        """A send returned and a message was handled after `moment`."""
        return any(at > moment for at in self.sent.values()) and any(at > moment for *_, at in self.handled)

    def stalls(self, since: float, until: float) -> tuple[float, float]:
        """The longest time between `since` and `until` without a send returning, and without a
        message handled: how long the fault held each side up."""
        sends = [at for at in self.sent.values() if since < at < until]
        handles = [at for *_, at in self.handled if since < at < until]
        return _longest_gap(since, sends), _longest_gap(since, handles)


def _longest_gap(start: float, moments: list[float]) -> float:
    points = [start, *sorted(moments)]
    return max(later - earlier for earlier, later in itertools.pairwise(points)) if moments else 0.0


@contextlib.asynccontextmanager
async def running_load(url: str) -> AsyncIterator[Load]:
    async with conveyor.App(url) as app:
        await app.create_queue("load")
        load = Load(app)

        @app.consumer(
            "load", max_batch_size=50, max_batch_timeout=0.05, visibility_timeout=VISIBILITY_TIMEOUT
        )
        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            now = time.monotonic()
            load.handled.extend((message.id, message.attempts, now) for message in batch.messages)

        consumer = asyncio.create_task(app.run_consumers(shutdown_grace=5))
        producers = [asyncio.create_task(load.produce()) for _ in range(SENDERS)]
        try:
            yield load
        finally:
            load.stop_sending.set()
            await asyncio.gather(*producers, return_exceptions=True)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer


async def survive(
    url: str, fault: Callable[[], Awaitable[None]], recover: Callable[[], Awaitable[float]]
) -> dict[str, object]:
    """Run the load, apply `fault`, check that everything sent is handled; return the figures."""
    async with running_load(url) as load:
        await eventually(lambda: len(load.handled) >= WARM_UP, "the warm-up messages were handled", 60)
        fault_at = time.monotonic()
        await fault()

        await eventually(
            lambda: load.carried_on_after(fault_at),
            "producer and consumer carried on",
            RECOVERY_LIMIT_SECONDS,
        )
        sent_before = len(load.sent)
        await eventually(lambda: len(load.sent) >= sent_before + AFTER_RECOVERY, "more sends", 60)
        send_stall, handle_stall = load.stalls(fault_at, time.monotonic())
        catch_up = await recover()
        load.stop_sending.set()
        await asyncio.sleep(0)  # let the producers stop

        async def drained() -> bool:
            return set(load.sent) <= {message_id for message_id, _, _ in load.handled}

        await eventually(drained, "every message sent was handled", 120)
        stats = await load.app.queue("load").stats()

    handled_ids = Counter(message_id for message_id, _, _ in load.handled)
    deliveries = Counter((message_id, attempts) for message_id, attempts, _ in load.handled)
    figures: dict[str, object] = {
        "sent": len(load.sent),
        "send_errors": load.send_errors,
        "delivered": len(set(load.sent) & set(handled_ids)),
        "lost": len(set(load.sent) - set(handled_ids)),
        "handled_again": sum(count - 1 for count in handled_ids.values()),
        "producer_stalled_seconds": round(send_stall, 2),
        "consumer_stalled_seconds": round(handle_stall, 2),
        "node_catch_up_seconds": round(catch_up, 2),
    }
    print(json.dumps(figures))
    assert figures["lost"] == 0
    # a message handled twice was delivered again (a new attempt): never the same delivery twice
    assert all(count == 1 for count in deliveries.values()), "one delivery was handled twice"
    assert stats.in_flight == 0
    return figures


async def test_killing_the_stream_leader_loses_nothing_and_work_carries_on(cluster: NatsCluster) -> None:
    url = cluster.url(replicas=3, prefix="fault")
    killed: list[NatsServer] = []

    async def kill_leader() -> None:
        leader = (await cluster.stream_cluster("fault_q_load"))["leader"]
        node = cluster.node(leader)
        node.kill()
        killed.append(node)

    async def restart_and_catch_up() -> float:
        started = time.monotonic()
        node = killed[0]
        node.start()

        async def current() -> bool:
            replicas = (await cluster.stream_cluster("fault_q_load")).get("replicas") or []
            peer = next((r for r in replicas if r["name"] == node.name), None)
            leader = (await cluster.stream_cluster("fault_q_load"))["leader"]
            return leader == node.name or (peer is not None and peer.get("current") and not peer.get("lag"))

        await eventually(current, f"{node.name} caught up with the stream", RECOVERY_LIMIT_SECONDS)
        return time.monotonic() - started

    await survive(url, kill_leader, restart_and_catch_up)


async def test_a_server_stopped_for_five_seconds_loses_nothing_and_work_carries_on(
    server: NatsServer,
) -> None:
    async def stop_for_five_seconds() -> None:
        server.stop()
        await asyncio.sleep(5)
        server.start()

    async def nothing_to_catch_up() -> float:
        return 0.0

    await survive(f"{server.url}?prefix=fault", stop_for_five_seconds, nothing_to_catch_up)
