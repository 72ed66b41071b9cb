"""One test per defect of issue 26 (items 1-6 and 8; item 7 is the input fuzz's): each states the
behaviour a user relies on, fails on the code the issue was filed against, and is marked
`xfail(strict=True)` until its fix lands, when it passes and the marker must go.

Where the fix needs a design decision the issue leaves open, the test assumes what the issue (or
DESIGN.md section 3a) states and says so in its reason.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import conveyor
from conveyor.errors import BackendUnavailable, ConveyorError, QueueNotFound
from reliability.processes import ROOT, Processes, Supervisor, worker_argv
from reliability.roles.settings import WORKER_ENV, WorkerSettings
from tests.reliability.conftest import (
    NETWORK_ENGINES,
    behind_a_proxy,
    deliveries,
    network_engine,
    skip_memory,
    started_keys,
)
from tests.support.apps import AppFactory
from tests.support.engines import EngineSetup
from tests.support.polling import eventually
from tests.support.tmpfs import small_tmpfs

pytestmark = pytest.mark.slow

MAX_RETRIES = 3
# A failing test stops waiting once a poison was delivered this many times past its bound.
EXTRA_DELIVERIES = 2
# Bound on how long a test waits for workers and engines (a failing one still ends).
WAIT_SECONDS = 60.0


def item(number: str, what: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"issue 26 item {number}: {what}")


# -- 1. a message that kills its worker -----------------------------------------------------------


async def test_a_message_that_kills_its_worker_is_dead_lettered_after_max_retries_plus_one_deliveries(
    engine: EngineSetup, url: str, tmp_path: Path, processes: Processes
) -> None:
    skip_memory(engine)
    ledger = tmp_path / "ledger"
    settings = WorkerSettings(
        ledger=str(ledger),
        max_retries=MAX_RETRIES,
        visibility_timeout=1.0,
        max_batch_size=10,
        max_concurrency=1,
    )
    bodies: list[dict[str, str]] = [{"key": f"m-{n}"} for n in range(10)]
    bodies[4]["poison"] = "exit"  # os._exit(70) in the handler
    async with conveyor.App(url) as app:
        jobs, dead_letters = app.queue("jobs"), app.queue("jobs-dlq")
        await app.create_queue("jobs-dlq")
        await jobs.send_batch(bodies)
        supervisor = Supervisor(
            processes, processes.start("worker", worker_argv(url), settings.to_env(WORKER_ENV))
        )

        async def over() -> bool:
            if deliveries(ledger, "m-4") > MAX_RETRIES + 1 + EXTRA_DELIVERIES:
                return True  # it will not stop by itself
            return (await jobs.stats()).total == 0 and (await dead_letters.stats()).total > 0

        await eventually(over, "the poison was dead-lettered", WAIT_SECONDS)
        await supervisor.stop()
        dead = {message.body["key"]: message for message in await dead_letters.peek(10)}
        left = (await jobs.stats()).total

    assert deliveries(ledger, "m-4") <= MAX_RETRIES + 1
    assert "m-4" in dead
    info = dead["m-4"].dead_letter
    assert info is not None and info.error
    assert left == 0  # its batch-mates were not stuck behind it


# -- 2. a missing dead-letter queue ---------------------------------------------------------------


async def test_a_missing_dead_letter_queue_does_not_undo_the_acks_of_other_batches(
    make_app: AppFactory,
) -> None:
    app = await make_app(real_clock=True)
    handled: Counter[int] = Counter()

    @app.consumer(
        "jobs",
        max_batch_size=1,
        max_batch_timeout=0,
        max_concurrency=10,
        max_retries=0,
        dead_letter_queue="jobs-dlq",
        visibility_timeout=1.0,
    )
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            handled[message.body["n"]] += 1
            await asyncio.sleep(0.05)
            if message.body.get("poison"):
                raise RuntimeError("poison")

    jobs = app.queue("jobs")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop, shutdown_grace=5))
    try:
        await eventually(lambda: _exists(app, "jobs-dlq"), "the worker created its dead-letter queue")
        await app.delete_queue("jobs-dlq")
        innocents = 400
        for start in range(0, innocents, 100):
            bodies = [{"n": n, "poison": n in POISON} for n in range(start, start + 100)]
            await jobs.send_batch(bodies)

        async def over() -> bool:
            if any(count > 1 for n, count in handled.items() if n not in POISON):
                return True  # an innocent message came back: no need to wait for more
            return (await jobs.stats()).total <= len(POISON)  # at most the poisons are left

        await eventually(over, "every innocent message was acked", WAIT_SECONDS)
    finally:
        stop.set()
        await worker
    twice = sorted(n for n, count in handled.items() if count > 1 and n not in POISON)
    assert twice == []


# The messages of that test whose handler raises: each of their settles holds a dead letter.
POISON = (100, 200, 300)


async def _exists(app: conveyor.App, name: str) -> bool:
    return any(info.name == name for info in await app.list_queues())


# -- 3. an event loop blocked past the lease ------------------------------------------------------


async def test_a_handler_blocking_the_event_loop_past_its_lease_is_dead_lettered_not_redelivered_forever(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app(real_clock=True)
    caplog.set_level(logging.INFO, logger="conveyor")
    delivered: Counter[str] = Counter()
    retries = 1

    @app.consumer(
        "jobs", max_retries=retries, max_batch_timeout=0, visibility_timeout=0.5, dead_letter_queue="jobs-dlq"
    )
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            delivered[message.id] += 1
            time.sleep(0.8)  # noqa: ASYNC251 - the defect: a blocking call holds the event loop

    await app.create_queue("jobs-dlq")
    message_id = await app.queue("jobs").send({"blocks": True})
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop, shutdown_grace=5))

    async def over() -> bool:
        return (
            delivered[message_id] > retries + 1 + EXTRA_DELIVERIES
            or (await app.queue("jobs-dlq").stats()).total > 0
        )

    try:
        await eventually(over, "the blocking message was dead-lettered", WAIT_SECONDS)
    finally:
        stop.set()
        await worker
    assert delivered[message_id] <= retries + 1
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None and dead.dead_letter.error
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("conveyor") and r.levelno >= logging.WARNING
    ]
    assert any("event loop" in text or "visibility timeout" in text for text in warnings), warnings


# -- 4. a consumer that dies at start-up ----------------------------------------------------------


async def _queues_of_the_start_up_app(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.create_queue("healthy")
        await app.create_queue("orphan")


async def test_the_worker_exits_non_zero_when_a_consumer_dies_at_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    await _queues_of_the_start_up_app(url)
    command = [sys.executable, "-m", "conveyor", "--url", url, "worker", "tests.reliability.start_up_app:app"]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
    )
    # the healthy consumer stops too, and the exit code tells a supervisor to start it again
    assert result.returncode != 0, result.stderr
    assert "missing-dlq" in result.stderr


async def test_run_consumers_raises_when_a_consumer_dies_at_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    await _queues_of_the_start_up_app(url)
    from tests.reliability.start_up_app import app

    try:
        with pytest.raises(QueueNotFound, match="missing-dlq"):
            await asyncio.wait_for(_run_on(app, url), WAIT_SECONDS)
    finally:
        await app.close()


async def _run_on(template: conveyor.App, url: str) -> None:
    app = conveyor.App(url, auto_create=False)
    app.consumers.extend(template.consumers)
    try:
        await app.run_consumers(shutdown_grace=1)
    finally:
        await app.close()


# -- 5. a SQLite file that cannot be opened -------------------------------------------------------


def _database(path: Path) -> bytes:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE filler (text TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 200,) for _ in range(200)])
    conn.close()
    return path.read_bytes()


def _bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "queue.db"
    if kind == "a directory":
        path.mkdir()
    elif kind == "a text file":
        path.write_text("these are not the bytes of a database\n" * 100)
    elif kind == "a truncated database":
        data = _database(tmp_path / "whole.db")
        path.write_bytes(data[: len(data) // 3])
    elif kind == "a corrupt database":
        data = _database(tmp_path / "whole.db")
        path.write_bytes(data[:100] + b"\xff" * 8_000 + data[8_100:])
    return path


@pytest.mark.parametrize("kind", ["a directory", "a text file", "a truncated database", "a corrupt database"])
async def test_a_sqlite_file_that_cannot_be_opened_gives_a_conveyor_error_on_every_call(
    kind: str, tmp_path: Path
) -> None:
    path = _bad_file(kind, tmp_path)
    app = conveyor.App(f"sqlite:///{path}")
    try:
        for _ in range(2):
            with pytest.raises(ConveyorError) as raised:
                await app.queue("jobs").send({"n": 1})
            assert str(path) in str(raised.value)
    finally:
        await app.close()


async def test_a_database_holding_a_foreign_table_of_conveyors_name_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE conveyor_messages (id INTEGER PRIMARY KEY, payload TEXT)")
    conn.close()
    app = conveyor.App(f"sqlite:///{path}")
    try:
        for _ in range(2):
            with pytest.raises(ConveyorError, match="conveyor_messages"):
                await app.queue("jobs").send({"n": 1})
    finally:
        await app.close()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = [row[1] for row in conn.execute("PRAGMA table_info(conveyor_messages)")]
    conn.close()
    assert (tables, columns) == ({"conveyor_messages"}, ["id", "payload"])


# -- 6. a send whose outcome is unknown -----------------------------------------------------------


@pytest.mark.parametrize("engine_name", NETWORK_ENGINES)
async def test_a_send_retried_after_an_ambiguous_failure_is_stored_once(
    engine_name: str, tmp_path: Path
) -> None:
    setup = network_engine(engine_name)
    options = {"pool_timeout": "1"} if engine_name == "postgres" else {}
    async with behind_a_proxy(setup, tmp_path, **options) as (url, proxy), conveyor.App(url) as app:
        orders = app.queue("orders")
        await orders.send({"warm-up": True})
        proxy.blackhole()  # the server commits the send; its reply never arrives
        with pytest.raises(BackendUnavailable):
            await orders.send({"order": 7}, dedup_id="order-7")
        proxy.heal()
        await orders.send({"order": 7}, dedup_id="order-7")
        stored = [message for message in await orders.peek(10) if message.body == {"order": 7}]
    assert len(stored) == 1


# -- 8. a full disk, failing settles, retry reasons, attempts of unhandled messages ---------------


async def test_a_full_disk_gives_a_conveyor_error_and_acks_still_work(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        async with conveyor.App(f"sqlite:///{disk / 'queue.db'}") as app:
            jobs = app.queue("jobs")
            with pytest.raises(Exception) as raised:  # which error it is, is what is tested
                for batch in range(1_000):
                    await jobs.send_batch(
                        [{"n": n, "pad": "x" * 1_000} for n in range(batch * 100, batch * 100 + 100)]
                    )
            assert isinstance(raised.value, ConveyorError), repr(raised.value)
            pulled = await jobs.pull(10)
            result = await jobs.ack([message.lease_id for message in pulled])
            assert result.ack_count == len(pulled) == 10


@pytest.mark.parametrize("engine_name", NETWORK_ENGINES)
async def test_settles_and_renewals_failing_on_an_unreachable_engine_log_one_line_per_try(
    engine_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = network_engine(engine_name)
    options = {"pool_timeout": "0.5"} if engine_name == "postgres" else {}
    caplog.set_level(logging.INFO, logger="conveyor")
    async with behind_a_proxy(setup, tmp_path, **options) as (url, proxy), conveyor.App(url) as app:
        running, finish = asyncio.Event(), asyncio.Event()

        @app.consumer("jobs", max_batch_timeout=0, visibility_timeout=1.5)
        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            running.set()
            await finish.wait()  # the batch is held while its renewals fail

        await app.queue("jobs").send({"n": 1})
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_consumers(stop=stop, shutdown_grace=5))
        try:
            await eventually(running.is_set, "the handler started", WAIT_SECONDS)
            proxy.refuse()
            await eventually(lambda: _said(caplog, "renew") >= 1, "a renewal failed", WAIT_SECONDS)
            finish.set()
            await eventually(lambda: _said(caplog, "settl") >= 2, "two settle tries failed", WAIT_SECONDS)
        finally:
            proxy.heal()
            finish.set()
            stop.set()
            await worker
    failures = [r for r in caplog.records if r.name.startswith("conveyor") and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in failures if r.exc_info] == []


def _said(caplog: pytest.LogCaptureFixture, word: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name.startswith("conveyor") and r.levelno >= logging.WARNING and word in r.getMessage().lower()
    )


async def test_a_retry_reason_reaches_the_dead_letter_queue(app: conveyor.App) -> None:
    from conveyor.testing import drain

    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            message.retry(reason="the partner API said 429")

    await app.queue("jobs").send({"n": 1})
    await drain(app)
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    assert "the partner API said 429" in dead.dead_letter.error


async def test_a_sigkill_spends_no_attempt_on_messages_read_ahead_but_the_one_batch_per_slot_begun(
    engine: EngineSetup, url: str, tmp_path: Path, processes: Processes
) -> None:
    skip_memory(engine)
    ledger = tmp_path / "ledger"
    settings = WorkerSettings(
        ledger=str(ledger),
        max_batch_size=10,
        max_concurrency=2,
        visibility_timeout=1.0,
        handler_seconds=WAIT_SECONDS,  # the first two batches hold both slots until the kill
        record_starts=True,
    )
    async with conveyor.App(url) as app:
        jobs = app.queue("jobs")
        for start in range(0, 200, 100):
            await jobs.send_batch([{"key": f"m-{n}"} for n in range(start, start + 100)])
        worker = processes.start("worker", worker_argv(url), settings.to_env(WORKER_ENV))
        # both slots' batches reached their handlers: a batch is handed (its attempt counts) just
        # before its handler records its start, so a kill between the two would blur the count
        both = 2 * settings.max_batch_size
        await eventually(
            lambda: len(started_keys(ledger)) >= both,
            "both running batches reached their handlers",
            WAIT_SECONDS,
        )

        async def leased_ahead() -> bool:
            return (await jobs.stats()).in_flight > settings.max_batch_size

        await eventually(leased_ahead, "the worker leased batches ahead", WAIT_SECONDS)
        processes.kill(worker, signal.SIGKILL)
        await processes.wait(worker, WAIT_SECONDS)
        pulled: list[conveyor.PulledMessage] = []

        async def all_back() -> bool:
            pulled.extend(await jobs.pull(100, visibility_timeout=WAIT_SECONDS))
            return len(pulled) == 200

        await eventually(all_back, "every message came back after the lease", WAIT_SECONDS)
    reached = started_keys(ledger)
    never = [message for message in pulled if message.body["key"] not in reached]
    assert len(never) == 200 - len(reached) > 0
    # the batches next in line are begun (handed) ahead of their slots, at most one per slot
    # (docs/semantics.md): a kill spends their attempt; every other message read ahead keeps it
    slots = settings.max_concurrency
    assert slots is not None
    begun_ahead = slots * settings.max_batch_size
    attempts = Counter(message.attempts for message in never)
    assert set(attempts) <= {1, 2}
    assert attempts[2] <= begun_ahead
    assert attempts[2] % settings.max_batch_size == 0  # whole batches
    assert attempts[1] >= len(never) - begun_ahead > 0
