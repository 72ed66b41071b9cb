"""A node of a 3-node NATS JetStream cluster dies under load: the leader of the queue's stream,
SIGKILLed, so its replicas must elect another and the work carries on; it is started again on the
same store and catches up. The cluster is the harness's own (loopback ports, a store in the run's
directory), stopped by PID at the end; the machine's nats-server is not touched."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

from conveyor.bench.nats_servers import NatsCluster
from reliability.scenarios.base import Context, Scenario

REPLICAS = 3
# How long a scenario waits for the stream to name a leader (after creation, after a kill).
LEADER_WAIT_SECONDS = 30.0


async def nats_leader_kill(ctx: Context) -> None:
    """A producer and two workers on a replicated queue (R3); the stream's leader is SIGKILLed
    (twice in a full run), stays down a few seconds and is started again."""
    prefix = dict(parse_qsl(urlsplit(ctx.url).query)).get("prefix", "conveyor")
    cluster = NatsCluster(ctx.run_dir / "cluster")
    await cluster.start()
    ctx.on_close(_stopper(cluster))
    await ctx.use_url(cluster.url(prefix=prefix, replicas=REPLICAS))
    queue = ctx.worker_settings.queue
    await ctx.app.create_queue(queue)
    stream = f"{prefix}_q_{queue}"
    count = ctx.size(3_000, 20_000)
    kills = ctx.size(1, 2)
    ctx.worker_settings = ctx.worker_settings.but(handler_seconds=0.01)
    ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=10, concurrency=2, rate=count / (ctx.budget * 0.6))
    )
    ctx.start_worker()
    ctx.start_worker()
    for number in range(1, kills + 1):
        if not await ctx.wait_completions(count * number // (kills + 2)):
            return
        leader = await _leader(cluster, stream)
        ctx.engine_fault(f"nats {leader} (leader of {stream}) SIGKILL")
        node = cluster.node(leader)
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(ctx.size(2, 8))
        await asyncio.to_thread(node.start)
        ctx.engine_recovered(f"nats {leader} restarted")


async def _leader(cluster: NatsCluster, stream: str) -> str:
    deadline = time.monotonic() + LEADER_WAIT_SECONDS
    while True:
        try:
            return str((await cluster.stream_cluster(stream))["leader"])
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _stopper(cluster: NatsCluster) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await asyncio.to_thread(cluster.stop)

    return stop


def _requires() -> str | None:
    return None if shutil.which("nats-server") else "nats-server is not on PATH"


SCENARIOS = [
    Scenario(
        "nats-leader-kill",
        "SIGKILL the leader of an R3 stream in a 3-node NATS cluster under load, start it again",
        nats_leader_kill,
        engines=("nats",),
        issue="24, 26",
        requires=_requires,
    ),
]
