"""The worker: runs every consumer of an app, sweeps retention, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from conveyor import limits as L
from conveyor.consumer.env import Env
from conveyor.consumer.runner import ConsumerRunner
from conveyor.consumer.spec import ConsumerSpec, Lifespan
from conveyor.core import Core

log = logging.getLogger("conveyor.worker")


class Worker:
    """Runs consumers on one Core: each in a ConsumerRunner, with the app's env and lifespan."""

    def __init__(
        self,
        core: Core,
        consumers: Sequence[ConsumerSpec],
        env: Env,
        *,
        lifespan: Lifespan | None = None,
        shutdown_grace: float = L.DEFAULT_SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self.core = core
        self.env = env
        self.lifespan = lifespan
        self.shutdown_grace = shutdown_grace
        self.runners = [ConsumerRunner(core, spec, env) for spec in consumers]
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Stop leasing; batches in flight finish within the grace period."""
        self.stopping.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set, `self.stop()` is called, or the task is cancelled."""
        if not self.runners:
            raise ValueError("the app has no consumers: register one with @app.consumer(queue)")
        await self.core.connected()
        async with self.lifespan(self.env) if self.lifespan is not None else contextlib.nullcontext():
            tasks = [
                asyncio.create_task(
                    runner.run(self.stopping, self.shutdown_grace), name=f"consumer:{runner.spec.queue}"
                )
                for runner in self.runners
            ]
            sweeper = asyncio.create_task(self._sweep_forever())
            self.started.set()
            waiters = [asyncio.ensure_future(self.stopping.wait()), *tasks]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # on cancellation (Ctrl-C in asyncio.run) this still drains gracefully
                self.stopping.set()
                sweeper.cancel()
                for waiter in waiters:
                    if waiter not in tasks:
                        waiter.cancel()
                results = await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
                for runner, result in zip(self.runners, results, strict=True):
                    if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                        log.error("consumer of %s stopped with an error", runner.spec.queue, exc_info=result)

    async def run_until_signalled(self) -> None:
        """`run()` until SIGTERM or SIGINT (Ctrl-C), which stop it gracefully."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stop)
        try:
            await self.run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.core.sweep()
                if removed:
                    log.info("sweep removed=%d (past retention)", removed)
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(L.SWEEP_INTERVAL_SECONDS)
