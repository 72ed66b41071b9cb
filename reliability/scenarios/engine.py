"""The engine's server crashes (SIGKILL, no shutdown) under load and comes back on the same port
with the same data; the server is the harness's own (reliability/servers.py)."""

from __future__ import annotations

import asyncio

from reliability.scenarios.base import Context, Scenario


async def engine_restart(ctx: Context) -> None:
    """A producer and two workers run; the server is SIGKILLed, stays down for a few seconds and
    is started again (twice in a full run). Producers see failed sends while it is down."""
    server = ctx.server
    assert server is not None
    count = ctx.size(3_000, 20_000)
    crashes = ctx.size(1, 2)
    down_seconds = ctx.size(2, 12)  # a full run outlasts PostgreSQL's default pool_timeout (10 s)
    ctx.worker_settings = ctx.worker_settings.but(handler_seconds=0.01)
    ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=10, concurrency=2, rate=count / (ctx.budget * 0.6))
    )
    ctx.start_worker()
    ctx.start_worker()
    for number in range(1, crashes + 1):
        goal = count * number // (crashes + 2)
        if not await ctx.wait_completions(goal):
            return
        ctx.engine_fault(f"{server.name} SIGKILL")
        await asyncio.to_thread(server.crash)
        await asyncio.sleep(down_seconds)
        await asyncio.to_thread(server.start)
        ctx.engine_recovered(f"{server.name} restarted")


SCENARIOS = [
    Scenario(
        "engine-restart",
        "SIGKILL the engine's server under load, restart it on the same data",
        engine_restart,
        engines=("postgres", "redis", "nats"),
        own_server=True,
        issue="26.6",
    ),
]
