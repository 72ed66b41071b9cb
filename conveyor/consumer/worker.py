"""The worker: runs every consumer of an app (and its background jobs: the schedules), sweeps
retention, and shuts down gracefully (also when one of its consumers or jobs dies, whose error it
then raises)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

from conveyor import limits as L
from conveyor.consumer.env import Env
from conveyor.consumer.heartbeat import Heartbeat, describe
from conveyor.consumer.observer import NO_OBSERVER, ConsumerObserver
from conveyor.consumer.runner import ConsumerRunner
from conveyor.consumer.spec import ConsumerSpec, Lifespan
from conveyor.core import Core
from conveyor.errors import BackendUnavailable, ConveyorError
from conveyor.producer import Queue

log = logging.getLogger("conveyor.worker")
# How often run_until_idle looks whether the queues are drained.
IDLE_CHECK_SECONDS = 0.005

#: a job the worker runs beside its consumers (the App's scheduler): (its name, a coroutine
#: function given the worker's stopping event, which returns once it is set)
BackgroundJob = tuple[str, Callable[[asyncio.Event], Awaitable[None]]]


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
        observer: ConsumerObserver = NO_OBSERVER,
        background: Sequence[BackgroundJob] = (),
    ) -> None:
        self.core = core
        self.background = list(background)
        self.env = env
        self.lifespan = lifespan
        self.shutdown_grace = shutdown_grace
        self.observer = observer  # worker metrics
        self.runners = [ConsumerRunner(core, spec, env, observer) for spec in consumers]
        #: this worker as its heartbeat describes it (`conveyor workers`)
        self.info = describe(consumers, time.time())
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        #: the signal that stopped `run_until_signalled` (SIGTERM or SIGINT), None if none did
        self.stopped_by: int | None = None

    def stop(self) -> None:
        """Stop leasing; batches in flight finish within the grace period."""
        self.stopping.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set, `self.stop()` is called, or the task is cancelled.

        A consumer that dies (its loop raises, at start-up or later) stops the others gracefully,
        and `run` then raises that consumer's error: a worker never carries on short of a
        consumer, nor ends as if it had been asked to stop.
        """
        if not self.runners and not self.background:
            raise ValueError("the app has no consumers: register one with @app.consumer(queue)")
        await self.core.connected()
        died: list[BaseException] = []
        async with self.lifespan(self.env) if self.lifespan is not None else contextlib.nullcontext():
            tasks = [self._start_consumer(runner, died) for runner in self.runners]
            tasks += [self._start_job(name, job, died) for name, job in self.background]
            sweeper = asyncio.create_task(self._sweep_forever())
            heartbeat = asyncio.create_task(Heartbeat(self.core, self.info).run(self.stopping))
            self.observer.started(self.runners)
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
                await asyncio.shield(asyncio.gather(*tasks, sweeper, heartbeat, return_exceptions=True))
                await self.observer.stopped(self.runners)
        if died:
            raise died[0]

    def _start_consumer(self, runner: ConsumerRunner, died: list[BaseException]) -> asyncio.Task[None]:
        queue = runner.spec.queue
        task = asyncio.create_task(runner.run(self.stopping, self.shutdown_grace), name=f"consumer:{queue}")

        def ended(task: asyncio.Task[None]) -> None:
            if task.cancelled() or (error := task.exception()) is None:
                return
            died.append(error)
            error.add_note(f"the consumer of {queue!r} died of this; the worker stopped its other consumers")
            # a conveyor error says what is wrong in one line; anything else is a bug: its traceback
            log.error(
                "the consumer of %r died: %s: %s; stopping the worker",
                queue,
                type(error).__name__,
                error,
                exc_info=None if isinstance(error, ConveyorError) else error,
            )

        task.add_done_callback(ended)
        return task

    def _start_job(
        self, name: str, job: Callable[[asyncio.Event], Awaitable[None]], died: list[BaseException]
    ) -> asyncio.Task[None]:
        async def run() -> None:
            await job(self.stopping)

        task = asyncio.create_task(run(), name=name)

        def ended(task: asyncio.Task[None]) -> None:
            if task.cancelled() or (error := task.exception()) is None:
                return
            died.append(error)
            error.add_note(f"the worker's {name} died of this; the worker stopped its consumers")
            log.error(
                "the %s died: %s: %s; stopping the worker",
                name,
                type(error).__name__,
                error,
                exc_info=None if isinstance(error, ConveyorError) else error,
            )

        task.add_done_callback(ended)
        return task

    async def run_until_signalled(self, *, until_idle: bool = False) -> int:
        """`run()` (or `run_until_idle()`) until SIGTERM or SIGINT (Ctrl-C), which stop it
        gracefully; `stopped_by` then names the signal. Returns how many messages were handled."""
        loop = asyncio.get_running_loop()

        def stop(signum: int) -> None:
            self.stopped_by = signum
            self.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop, signum)
        try:
            if until_idle:
                return await self.run_until_idle()
            await self.run()
            return self.processed
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    @property
    def processed(self) -> int:
        """Messages handled so far, by every consumer."""
        return sum(runner.processed for runner in self.runners)

    async def run_until_idle(self, timeout: float | None = None) -> int:
        """`run()` until every consumer's queue holds nothing ready or in flight (delayed messages
        stay), or until stopped; returns how many messages were handled. TimeoutError after
        `timeout` seconds (None: no bound). Build the worker with `max_batch_timeout=0` specs so
        that a partial batch is handed over as soon as its queue runs dry."""
        task = asyncio.create_task(self.run())
        try:
            async with asyncio.timeout(timeout):
                started = asyncio.ensure_future(self.started.wait())
                try:
                    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    started.cancel()
                while not task.done():
                    if await self._idle():
                        break
                    await asyncio.sleep(IDLE_CHECK_SECONDS)
        finally:
            self.stop()
            await task
        return self.processed

    async def _idle(self) -> bool:
        for runner in self.runners:
            if runner.in_flight:
                return False
            stats = await Queue(self.core, runner.spec.queue).stats()
            if stats.backlog or stats.in_flight:
                return False
        # one more look after the runners have settled: nothing may have arrived meanwhile
        return all(not runner.in_flight for runner in self.runners)

    async def _sweep_forever(self) -> None:
        # ends when the worker stops, even if a driver swallowed the cancellation (Python 3.11's
        # wait_for can, when the awaited call completes as it is cancelled)
        while not self.stopping.is_set():
            try:
                removed = await self.core.sweep()
                if removed:
                    log.info("sweep removed=%d (past retention)", removed)
            except BackendUnavailable as exc:  # an outage is one line, as for settles and renewals
                log.warning("retention sweep failed: %s", exc)
            except Exception:
                log.exception("retention sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), L.SWEEP_INTERVAL_SECONDS)
