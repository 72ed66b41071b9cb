"""What a scenario is, and the context it runs in: the run's URL and ledger, its processes and
workers, the harness's own App for looking at the queues, and the final drain.

A scenario's `body` runs the faulty part (start producers and workers, inflict the faults); the
runner then calls `drain()` (one healthy worker at least, until the queue is empty or stops
moving) and `final_state()`, and hands both with the ledger to the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import conveyor
from conveyor.errors import ConveyorError, QueueNotFound
from reliability.checker import DeadLetterSeen, Expectations, FinalState
from reliability.engines import Engine
from reliability.ledger import LedgerFile, now, read_records
from reliability.processes import Child, Processes, Supervisor, worker_argv
from reliability.roles.producer import produce
from reliability.roles.settings import PRODUCER_ENV, WORKER_ENV, ProducePlan, WorkerSettings
from reliability.servers import OwnServer

# The drain ends when the queue stays unchanged this long (see `drain`) on top of two
# visibility timeouts: what a redelivery after a lost lease takes.
DRAIN_STALL_SECONDS = 4.0
DRAIN_POLL_SECONDS = 0.25
# The longest the drain runs, quick and full, while it still moves (a stalled drain ends after
# DRAIN_STALL_SECONDS): a quick run on a loaded 2-core machine may need a minute.
DRAIN_SECONDS = {True: 60.0, False: 90.0}
# How long the worker's command line waits for its batches after SIGTERM.
WORKER_SHUTDOWN_GRACE_SECONDS = 20
# What a worker prints once its consumers run (conveyor/cli/worker.py).
STARTED_BANNER = "conveyor worker ·"
# Dead letters read back per pull, and for how long they stay leased to the checker.
READ_BATCH = 100
READ_LEASE_SECONDS = 600.0
# The first messages of a queue the checker looks at to name what is still there.
PEEK_LIMIT = 1_000


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    body: Callable[[Context], Awaitable[None]]
    #: the engines it applies to (None: every one)
    engines: tuple[str, ...] | None = None
    #: it crashes the engine: it runs on a server of its own
    own_server: bool = False
    #: what it exercises in the issues, for the report
    issue: str = ""
    #: seconds its faulty part may take, quick and full (the drain comes on top)
    budget: tuple[float, float] = (20.0, 60.0)
    #: the drain's own bound, when a scenario needs more than DRAIN_SECONDS
    drain: tuple[float, float] | None = None
    #: why it cannot run on this machine (e.g. it mounts a file system), or None
    requires: Callable[[], str | None] | None = None

    def problem(self, engine: Engine) -> str | None:
        """Why it does not run on `engine` (it does not apply, or needs what is missing), or None."""
        if self.engines is not None and engine.name not in self.engines:
            return "n/a"
        if self.requires is not None and (problem := self.requires()) is not None:
            return problem
        if self.own_server:
            return engine.own_server_problem()
        return None


class Context:
    def __init__(
        self,
        scenario: Scenario,
        engine: Engine,
        run_dir: Path,
        url: str,
        *,
        quick: bool,
        server: OwnServer | None = None,
    ) -> None:
        self.scenario = scenario
        self.engine = engine
        self.run_dir = run_dir
        self.url = url
        self.quick = quick
        self.server = server
        self.ledger_dir = run_dir / "ledger"
        self.events = LedgerFile(self.ledger_dir, "events")
        self.processes = Processes(self.events, run_dir / "logs")
        self.worker_settings = WorkerSettings(ledger=str(self.ledger_dir))
        self.app = conveyor.App(url)
        self.supervisors: list[Supervisor] = []
        self.producers: list[Child] = []
        self.poison: set[str] = set()
        self.durable = True
        self.notes: list[str] = []
        self.violations: list[str] = []
        self.started = time.monotonic()
        self._sends: LedgerFile | None = None
        self._done_offsets: dict[Path, int] = {}
        self._done_lines = 0
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    async def use_url(self, url: str) -> None:
        """Run on `url` instead (before any process starts): a scenario that places the data itself."""
        await self.app.close()
        self.url = url
        self.app = conveyor.App(url)

    def on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` after every process and the harness's App are closed."""
        self._cleanups.append(cleanup)

    # -- sizes and time ----------------------------------------------------------------------

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    @property
    def budget(self) -> float:
        return self.scenario.budget[0 if self.quick else 1]

    def remaining(self) -> float:
        return max(0.0, self.budget - (time.monotonic() - self.started))

    # -- producers ---------------------------------------------------------------------------

    def plan(self, **options: object) -> ProducePlan:
        """A ProducePlan on this run's ledger; its poison keys become expected dead letters."""
        plan = ProducePlan(ledger=str(self.ledger_dir), **options)  # type: ignore[arg-type]
        self.poison.update(f"{plan.tag}-{n}" for n, _ in plan.poison)
        return plan

    def start_producer(self, plan: ProducePlan) -> Child:
        env = {"CONVEYOR_URL": self.url, **plan.to_env(PRODUCER_ENV)}
        child = self.processes.python(f"producer-{plan.tag}", "reliability.roles.producer", env=env)
        self.producers.append(child)
        return child

    async def produce_here(self, plan: ProducePlan) -> tuple[int, int]:
        """Send `plan` from the harness's own process (fast fills); (sent, failed)."""
        if self._sends is None:
            self._sends = LedgerFile(self.ledger_dir, "sends")
        return await produce(self.app, plan, self._sends)

    async def wait_producers(self, timeout: float | None = None) -> None:
        """Let the producers finish (within `timeout`, else the budget left); stop any still sending."""
        limit = self.remaining() if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        for child in self.producers:
            if await self.processes.wait(child, max(0.0, deadline - loop.time())) is None:
                self.notes.append(f"producer {child.role} stopped at the time bound")
                await self.processes.stop(child)

    # -- workers -----------------------------------------------------------------------------

    def start_worker(self, settings: WorkerSettings | None = None, *, supervised: bool = True) -> Supervisor:
        """A worker process running `settings` (default: this run's), started again whenever it dies."""
        env = (settings or self.worker_settings).to_env(WORKER_ENV)
        child = self.processes.start("worker", worker_argv(self.url, WORKER_SHUTDOWN_GRACE_SECONDS), env)
        supervisor = Supervisor(self.processes, child, max_restarts=40 if supervised else 0)
        self.supervisors.append(supervisor)
        return supervisor

    # -- faults ------------------------------------------------------------------------------

    def fault(self, detail: str) -> None:
        """A fault that excuses nothing (a user deleting a queue): recovery is measured from it."""
        self.events.write({"kind": "fault", "at": now(), "detail": detail})

    def engine_fault(self, detail: str) -> None:
        self.events.write({"kind": "engine_fault", "at": now(), "detail": detail})

    def engine_recovered(self, detail: str = "") -> None:
        self.events.write({"kind": "engine_recovered", "at": now(), "detail": detail})

    # -- watching ----------------------------------------------------------------------------

    def completions(self) -> int:
        """Completion records written so far (read incrementally: cheap on a big ledger)."""
        for path in self.ledger_dir.glob("done-*.jsonl"):
            offset = self._done_offsets.get(path, 0)
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
            whole = data.rfind(b"\n") + 1
            self._done_lines += data[:whole].count(b"\n")
            self._done_offsets[path] = offset + whole
        return self._done_lines

    def poison_deliveries(self) -> int:
        """The most deliveries any one poison message has had."""
        counts: dict[str, int] = {}
        for record in read_records(self.ledger_dir, "poison"):
            counts[record["key"]] = counts.get(record["key"], 0) + 1
        return max(counts.values(), default=0)

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> bool:
        """Wait until `condition()` (checked every 50 ms); False, with a note, at the bound."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.remaining() if timeout is None else timeout)
        while not condition():
            if loop.time() >= deadline:
                self.notes.append(f"gave up waiting until {what}")
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_completions(self, goal: int) -> bool:
        """Wait until handlers have completed `goal` messages (within the budget left)."""
        return await self.wait_for(lambda: self.completions() >= goal, f"{goal:,} completions")

    async def total(self, queue: str | None = None) -> int | None:
        """Messages in the queue (any state), or None while the engine does not answer."""
        try:
            return (await self.app.queue(queue or self.worker_settings.queue).stats()).total
        except (ConveyorError, OSError):
            return None

    # -- the end -----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Producers done, at least one worker running: until the queue is empty, stops moving,
        or the drain's time is up. Then every worker is stopped.

        The queue moves when its count changes, or when a poison is delivered again within its
        max_retries + 1 deliveries (it may be on its way to the dead-letter queue); deliveries
        past that bound are not progress."""
        await self.wait_producers()
        if not any(not s.gave_up for s in self.supervisors):
            self.start_worker()
        loop = asyncio.get_running_loop()
        bounds = self.scenario.drain or (DRAIN_SECONDS[True], DRAIN_SECONDS[False])
        deadline = loop.time() + bounds[0 if self.quick else 1]
        stall = DRAIN_STALL_SECONDS + 2 * self.worker_settings.visibility_timeout
        bound = self.worker_settings.max_retries + 1
        last: tuple[int | None, int] = (None, -1)
        moved_at = loop.time()
        while True:
            total = await self.total()
            if total == 0:
                break
            deliveries = self.poison_deliveries()
            if (total, min(deliveries, bound)) != last:
                last, moved_at = (total, min(deliveries, bound)), loop.time()
            elif loop.time() - moved_at > stall:
                self.notes.append(f"drain stopped: {total} messages left, unmoved for {stall:.0f} s")
                break
            if loop.time() > deadline:
                self.notes.append(f"drain stopped at its time bound with {total} messages left")
                break
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        await self.stop_workers()

    async def stop_workers(self) -> None:
        """SIGTERM every worker: one that had started must exit 0 (one still starting up, e.g.
        just restarted by its supervisor, may die of the signal before conveyor handles it)."""
        children = [supervisor.child for supervisor in self.supervisors]
        codes = await asyncio.gather(*(supervisor.stop() for supervisor in self.supervisors))
        self.supervisors.clear()
        for child, code in zip(children, codes, strict=True):
            if code is None or code == 0:
                continue
            if STARTED_BANNER in child.log.read_text(errors="replace"):
                self.violations.append(f"a worker stopped with SIGTERM exited {code}, not 0")
            else:
                self.notes.append(f"a worker stopped while starting up exited {code}")

    async def final_state(self) -> FinalState:
        dead: list[DeadLetterSeen] = []
        dlq = self.worker_settings.dead_letter_queue
        if dlq is not None:
            dead_letters = self.app.queue(dlq)
            with contextlib.suppress(QueueNotFound):
                while batch := await dead_letters.pull(READ_BATCH, READ_LEASE_SECONDS):
                    for message in batch:
                        info = message.dead_letter
                        dead.append(
                            DeadLetterSeen(
                                key=_key(message.body),
                                error="" if info is None else info.error,
                                attempts=0 if info is None else info.attempts,
                            )
                        )
        queue = self.app.queue(self.worker_settings.queue)
        total = (await queue.stats()).total
        left = [_key(message.body) for message in await queue.peek(PEEK_LIMIT)] if total else []
        return FinalState(dead, left, total)

    def expectations(self) -> Expectations:
        return Expectations(
            max_retries=self.worker_settings.max_retries,
            visibility_timeout=self.worker_settings.visibility_timeout,
            poison=set(self.poison),
            durable=self.durable,
        )

    async def close(self) -> None:
        for supervisor in self.supervisors:
            await supervisor.stop()
        await self.processes.close()
        await self.app.close()
        self.events.close()
        if self._sends is not None:
            self._sends.close()
        for cleanup in reversed(self._cleanups):
            await cleanup()


def _key(body: object) -> str:
    return str(body["key"]) if isinstance(body, dict) and "key" in body else repr(body)[:80]
