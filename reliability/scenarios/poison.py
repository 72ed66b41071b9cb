"""Messages that hurt their worker: one that exits the process, one that blocks the event loop past
the visibility timeout, one that always fails while its dead-letter queue has been deleted. Each
must end in the dead-letter queue with its error after at most max_retries + 1 deliveries, and
nothing else may (issue 26 items 1-3, issue 33)."""

from __future__ import annotations

from reliability.scenarios.base import Context, Scenario


async def poison_exit(ctx: Context) -> None:
    """One message among many calls os._exit(70) in its handler; a supervisor restarts the worker."""
    count = ctx.size(300, 2_000)
    ctx.worker_settings = ctx.worker_settings.but(visibility_timeout=1.0, max_concurrency=2)
    ctx.start_producer(ctx.plan(tag="p", count=count, batch=100, poison=[(count // 2, "exit")]))
    ctx.start_worker()


async def poison_isolation(ctx: Context) -> None:
    """Issue 33's shape: one poison (exit) among 20 messages, batches of 5, autoscaled
    concurrency, max_retries 3, a supervisor restarting the worker: only the poison may reach
    the dead-letter queue, after at most 4 deliveries, and every other message is handled."""
    ctx.worker_settings = ctx.worker_settings.but(
        visibility_timeout=1.0, max_batch_size=5, max_concurrency=None, max_retries=3
    )
    ctx.start_producer(ctx.plan(tag="p", count=20, batch=20, poison=[(7, "exit")]))
    ctx.start_worker()


async def blocked_loop(ctx: Context) -> None:
    """Two messages hold the event loop 1.5 s (time.sleep in the async handler) with a 1 s lease."""
    count = ctx.size(200, 1_000)
    ctx.worker_settings = ctx.worker_settings.but(
        visibility_timeout=1.0, block_seconds=1.5, max_concurrency=2
    )
    blockers = [(count // 3, "block"), (2 * count // 3, "block")]
    ctx.start_producer(ctx.plan(tag="p", count=count, batch=50, poison=blockers))
    ctx.start_worker()


async def missing_dlq(ctx: Context) -> None:
    """The dead-letter queue is deleted while the worker runs; then messages that always fail
    (raise) arrive among others: their dead-lettering must not fail the other batches' acks."""
    count = ctx.size(1_000, 6_000)
    dead_letter_queue = ctx.worker_settings.dead_letter_queue
    assert dead_letter_queue is not None
    ctx.worker_settings = ctx.worker_settings.but(max_retries=1, handler_seconds=0.005)
    ctx.start_worker()
    warm_up = ctx.plan(tag="warm", count=50, batch=50)
    await ctx.produce_here(warm_up)
    if not await ctx.wait_for(lambda: ctx.completions() >= 50, "the worker handled the first 50"):
        return
    ctx.fault(f"dead-letter queue {dead_letter_queue} deleted")
    await ctx.app.delete_queue(dead_letter_queue)
    poison = [(n, "raise") for n in range(count // 10, count, count // 5)]
    ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=10, rate=count / (ctx.budget * 0.25), poison=poison)
    )


SCENARIOS = [
    Scenario(
        "poison-exit",
        "a message whose handler calls os._exit, the worker restarted each time",
        poison_exit,
        issue="26.1",
    ),
    Scenario(
        "poison-isolation",
        "issue 33: one exiting poison among 20, batches of 5, autoscaled",
        poison_isolation,
        issue="33",
    ),
    Scenario(
        "blocked-loop",
        "time.sleep(1.5) in an async handler, visibility timeout 1 s",
        blocked_loop,
        issue="26.3",
    ),
    Scenario(
        "missing-dlq",
        "the dead-letter queue deleted while the worker runs; failing messages arrive",
        missing_dlq,
        issue="26.2",
    ),
]
