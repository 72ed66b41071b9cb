"""Issue 33, as a user meets it: a worker *process* whose handler exits (`os._exit`) on one message
among 20, in batches of 5, with autoscaled concurrency and a supervisor that restarts it. Only
that message may end in the dead-letter queue, after at most max_retries + 1 deliveries; every
other message is handled, and a second handling of one is explained by a worker's death; nothing
is lost. Runs on every engine a worker process can share (not memory://).

The worker is reliability's (reliability/roles/worker_app.py): it fsyncs each completion to a
ledger before it acks, and each poison delivery before it exits.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from reliability.checker import Explainer
from reliability.ledger import Completion, Ledger, LedgerFile
from reliability.processes import Processes, Supervisor, worker_argv
from reliability.roles.settings import WORKER_ENV, WorkerSettings
from tests.reliability.conftest import deliveries, skip_memory
from tests.support.engines import EngineSetup
from tests.support.polling import eventually

pytestmark = pytest.mark.slow

MAX_RETRIES = 3
MESSAGES = 20
POISON = "m-7"
# A failing run stops waiting once the poison was delivered this many times past its bound.
EXTRA_DELIVERIES = 2
WAIT_SECONDS = 120.0


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    events = LedgerFile(tmp_path / "ledger", "events")
    started = Processes(events, tmp_path / "logs")
    yield started
    await started.close()
    events.close()


def unexplained_repeats(ledger: Ledger, visibility_timeout: float) -> list[str]:
    """The keys handled more than once where no fault the ledger holds explains the repeat."""
    explainer = Explainer(ledger, visibility_timeout)
    by_key: dict[str, list[Completion]] = defaultdict(list)
    for completion in ledger.completions:
        by_key[completion.key].append(completion)
    return [
        key
        for key, completions in by_key.items()
        for first, second in itertools.pairwise(completions)
        if explainer.explain(first, second) is None
    ]


async def test_a_message_that_exits_its_worker_is_the_only_one_dead_lettered(
    engine: EngineSetup, url: str, tmp_path: Path, processes: Processes
) -> None:
    skip_memory(engine)
    ledger = tmp_path / "ledger"
    settings = WorkerSettings(
        ledger=str(ledger),
        max_retries=MAX_RETRIES,
        visibility_timeout=1.0,
        max_batch_size=5,
        max_concurrency=None,  # autoscaled
    )
    keys = [f"m-{n}" for n in range(MESSAGES)]
    bodies: list[dict[str, str]] = [{"key": key} for key in keys]
    bodies[keys.index(POISON)]["poison"] = "exit"  # os._exit(70) in the handler
    async with conveyor.App(url) as app:
        jobs, dead_letters = app.queue("jobs"), app.queue("jobs-dlq")
        await app.create_queue("jobs-dlq")
        await jobs.send_batch(bodies)
        started = time.monotonic()
        supervisor = Supervisor(
            processes, processes.start("worker", worker_argv(url), settings.to_env(WORKER_ENV))
        )

        async def over() -> bool:
            if deliveries(ledger, POISON) > MAX_RETRIES + 1 + EXTRA_DELIVERIES:
                return True  # it will not stop by itself
            return (await jobs.stats()).total == 0 and (await dead_letters.stats()).total > 0

        await eventually(over, "the queue drained", WAIT_SECONDS)
        drain_seconds = time.monotonic() - started
        await supervisor.stop()
        dead = {message.body["key"]: message for message in await dead_letters.peek(MESSAGES)}
        left = (await jobs.stats()).total

    record = Ledger.read(ledger)
    handled = {completion.key for completion in record.completions}
    poison_deliveries = deliveries(ledger, POISON)
    innocents_dead = sorted(set(dead) - {POISON})
    print(  # the figures of issue 33's closing note (pytest -s shows them)
        f"\n[poison-isolation {engine.name}] deliveries of the poison={poison_deliveries} "
        f"innocents dead-lettered={len(innocents_dead)} drain={drain_seconds:.1f}s "
        f"restarts={supervisor.restarts} completions={len(record.completions)}"
    )
    assert poison_deliveries <= MAX_RETRIES + 1
    assert innocents_dead == []
    assert POISON in dead
    info = dead[POISON].dead_letter
    assert info is not None
    assert "without an outcome" in info.error and "exited" in info.error
    assert left == 0
    assert handled == set(keys) - {POISON}  # every other message handled: nothing lost
    assert unexplained_repeats(record, settings.visibility_timeout) == []
