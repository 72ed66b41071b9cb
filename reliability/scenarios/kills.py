"""Processes killed under load: a worker by SIGKILL, a producer by SIGKILL mid-send, a worker by
SIGTERM (which must finish its batches, give the rest back and exit 0)."""

from __future__ import annotations

import asyncio
import signal

from reliability.scenarios.base import Context, Scenario


async def worker_sigkill(ctx: Context) -> None:
    """Two workers (4 batches of 10 at a time, 0.2 s of work each: 400 msg/s together) under a
    producer sending faster than that, so a backlog builds and workers lease batches ahead; one
    worker is SIGKILLed at evenly spaced points and started again by its supervisor."""
    count = ctx.size(3_000, 20_000)
    kills = ctx.size(2, 5)
    ctx.worker_settings = ctx.worker_settings.but(handler_seconds=0.2)
    ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=10, concurrency=2, rate=count / (ctx.budget * 0.3))
    )
    workers = [ctx.start_worker(), ctx.start_worker()]
    for number in range(1, kills + 1):
        goal = count * number // (kills + 1)
        if not await ctx.wait_completions(goal):
            return
        ctx.processes.kill(workers[number % 2].child, signal.SIGKILL)


async def producer_sigkill(ctx: Context) -> None:
    """Two producers, one with 20 concurrent `send`s, one with `send_batch` of 50, each SIGKILLed
    mid-run: their calls in flight are unknown, every acknowledged one must arrive."""
    count = ctx.size(3_000, 20_000)
    rate = count / (ctx.budget * 0.5)
    one = ctx.start_producer(ctx.plan(tag="one", count=count, batch=1, concurrency=20, rate=rate))
    many = ctx.start_producer(ctx.plan(tag="many", count=count, batch=50, concurrency=2, rate=rate))
    ctx.start_worker()
    await asyncio.sleep(ctx.budget * 0.15)
    ctx.processes.kill(one, signal.SIGKILL)
    await asyncio.sleep(ctx.budget * 0.1)
    ctx.processes.kill(many, signal.SIGKILL)
    # the producers are not started again: what they had not sent yet was never sent


async def sigterm_under_load(ctx: Context) -> None:
    """Two workers with 0.3 s batches under a steady producer; one gets SIGTERM now and then (and
    is started again): it must finish its batches, release the rest and exit 0."""
    count = ctx.size(2_000, 10_000)
    stops = ctx.size(2, 4)
    ctx.worker_settings = ctx.worker_settings.but(handler_seconds=0.3)
    ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=10, concurrency=2, rate=count / (ctx.budget * 0.6))
    )
    workers = [ctx.start_worker(), ctx.start_worker()]
    for number in range(1, stops + 1):
        goal = count * number // (stops + 1)
        if not await ctx.wait_completions(goal):
            return
        child = workers[number % 2].child
        ctx.processes.kill(child, signal.SIGTERM)
        code = await ctx.processes.wait(child, 30)
        if code != 0:
            ctx.violations.append(f"a worker stopped with SIGTERM under load exited {code}, not 0")


SCENARIOS = [
    Scenario(
        "worker-sigkill",
        "SIGKILL a worker mid-run, its supervisor starts it again",
        worker_sigkill,
        issue="26",
    ),
    Scenario(
        "producer-sigkill",
        "SIGKILL producers mid-send (concurrent send, send_batch)",
        producer_sigkill,
        issue="26",
    ),
    Scenario(
        "sigterm",
        "SIGTERM a worker under load: it drains, releases and exits 0",
        sigterm_under_load,
        issue="26",
    ),
]
