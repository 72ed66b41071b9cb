"""A large backlog (1M messages in a full run) filled fast with send_batch, drained by two
workers with batches of 100, one of which is SIGKILLed halfway."""

from __future__ import annotations

import signal
import time

from reliability.scenarios.base import Context, Scenario


async def large_backlog(ctx: Context) -> None:
    count = ctx.size(20_000, 1_000_000)
    ctx.worker_settings = ctx.worker_settings.but(
        max_batch_size=100, max_batch_timeout=0.5, visibility_timeout=10.0
    )
    started = time.monotonic()
    sent, failed = await ctx.produce_here(ctx.plan(tag="b", count=count, batch=100, concurrency=4))
    seconds = time.monotonic() - started
    ctx.notes.append(f"filled {sent:,} in {seconds:.1f} s ({sent / seconds:,.0f} msg/s), {failed} failed")
    started = time.monotonic()
    workers = [ctx.start_worker(), ctx.start_worker()]
    if await ctx.wait_for(lambda: ctx.completions() >= count // 2, f"{count // 2:,} completions"):
        ctx.processes.kill(workers[0].child, signal.SIGKILL)
        ctx.notes.append(f"half drained in {time.monotonic() - started:.1f} s")


SCENARIOS = [
    Scenario(
        "large-backlog",
        "fill 1M (quick: 20k) with send_batch, drain, SIGKILL a worker halfway",
        large_backlog,
        issue="26",
        budget=(60.0, 600.0),
        drain=(60.0, 600.0),
    ),
]
