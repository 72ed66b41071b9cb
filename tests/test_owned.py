"""conveyor.Owned: one task owns a resource; calls run in it, in order, and answer their callers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import conveyor


class Resource:
    """Records which thread and task touched it, and whether it was released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.tasks: set[asyncio.Task[Any] | None] = set()
        self.closed = False

    def use(self, name: str) -> str:
        self.tasks.add(asyncio.current_task())
        self.calls.append(name)
        return name.upper()


@contextlib.asynccontextmanager
async def owned_resource(resource: Resource) -> AsyncIterator[Resource]:
    try:
        yield resource
    finally:
        resource.closed = True


async def test_calls_run_in_the_owner_task_in_order_and_return_their_results() -> None:
    resource = Resource()
    async with conveyor.Owned(lambda: owned_resource(resource)) as owned:
        results = await asyncio.gather(*(owned.call(Resource.use, f"c{n}") for n in range(20)))
    assert results == [f"C{n}" for n in range(20)]
    assert resource.calls == [f"c{n}" for n in range(20)]
    assert len(resource.tasks) == 1 and asyncio.current_task() not in resource.tasks
    assert resource.closed


async def test_a_call_raises_the_exception_its_function_raised_and_the_owner_goes_on() -> None:
    def fail(resource: Resource) -> None:
        raise KeyError("missing")

    async with conveyor.Owned(lambda: owned_resource(Resource())) as owned:
        with pytest.raises(KeyError, match="missing"):
            await owned.call(fail)
        assert await owned.call(Resource.use, "after") == "AFTER"


async def test_an_async_function_is_awaited_in_the_owner() -> None:
    async def use_later(resource: Resource, name: str) -> str:
        await asyncio.sleep(0)
        return resource.use(name)

    async with conveyor.Owned(lambda: owned_resource(Resource())) as owned:
        assert await owned.call(use_later, "x") == "X"


async def test_a_setup_that_fails_raises_from_start_and_from_every_call() -> None:
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[Resource]:
        raise ConnectionError("no database")
        yield Resource()  # pragma: no cover

    owned = conveyor.Owned(broken)
    with pytest.raises(ConnectionError, match="no database"):
        await owned.start()
    with pytest.raises(ConnectionError, match="no database"):
        await owned.call(Resource.use, "x")
    await owned.close()


async def test_close_serves_the_calls_already_waiting_then_refuses_new_ones() -> None:
    resource = Resource()
    owned = conveyor.Owned(lambda: owned_resource(resource))
    await owned.start()
    waiting = [asyncio.create_task(owned.call(Resource.use, f"c{n}")) for n in range(5)]
    await asyncio.sleep(0)  # they are queued
    await owned.close()
    assert [task.result() for task in waiting] == ["C0", "C1", "C2", "C3", "C4"]
    assert resource.closed and not owned.running
    with pytest.raises(conveyor.OwnerClosed):
        await owned.call(Resource.use, "late")


async def test_a_call_before_start_is_refused() -> None:
    with pytest.raises(conveyor.OwnerClosed, match="start it"):
        await conveyor.Owned(lambda: owned_resource(Resource())).call(Resource.use, "x")


async def test_the_request_queue_is_bounded_so_callers_wait_for_room() -> None:
    gate = asyncio.Event()

    async def blocked(resource: Resource) -> None:
        await gate.wait()

    async with conveyor.Owned(lambda: owned_resource(Resource()), max_waiting=2) as owned:
        first = asyncio.create_task(owned.call(blocked))  # taken by the owner, which then waits
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(owned.call(Resource.use, f"q{n}")) for n in range(3)]
        await asyncio.sleep(0.01)
        # two wait in the queue; the third caller waits for room
        assert sum(1 for task in queued if not task.done()) == 3
        assert owned._calls is not None and owned._calls.full()
        gate.set()
        await first
        assert [await task for task in queued] == ["Q0", "Q1", "Q2"]


async def test_a_caller_cancelled_before_its_call_starts_withdraws_it() -> None:
    gate = asyncio.Event()
    resource = Resource()

    async def blocked(resource: Resource) -> None:
        await gate.wait()

    async with conveyor.Owned(lambda: owned_resource(resource)) as owned:
        first = asyncio.create_task(owned.call(blocked))
        await asyncio.sleep(0.01)
        withdrawn = asyncio.create_task(owned.call(Resource.use, "withdrawn"))
        await asyncio.sleep(0.01)
        withdrawn.cancel()
        gate.set()
        await first
        assert await owned.call(Resource.use, "kept") == "KEPT"
    assert resource.calls == ["kept"]


async def test_a_turn_wraps_the_calls_waiting_together_and_a_failed_turn_fails_them_all() -> None:
    turns: list[str] = []

    @contextlib.contextmanager
    def transaction(resource: Resource) -> Iterator[None]:
        turns.append("begin")
        yield
        if "poison" in resource.calls:
            raise RuntimeError("commit failed")
        turns.append("commit")

    async with conveyor.Owned(lambda: owned_resource(Resource()), turn=transaction) as owned:
        assert await asyncio.gather(*(owned.call(Resource.use, f"c{n}") for n in range(5))) == [
            "C0",
            "C1",
            "C2",
            "C3",
            "C4",
        ]
        assert turns == ["begin", "commit"]  # five calls, one turn
        results = await asyncio.gather(
            owned.call(Resource.use, "ok"), owned.call(Resource.use, "poison"), return_exceptions=True
        )
    assert [str(result) for result in results] == ["commit failed", "commit failed"]


async def test_a_sqlite_connection_is_used_from_one_thread_only() -> None:
    threads: set[int] = set()

    def insert(db: sqlite3.Connection, n: int) -> None:
        threads.add(threading.get_ident())
        db.execute("INSERT INTO t VALUES (?)", (n,))

    def setup() -> contextlib.closing[sqlite3.Connection]:
        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE t (n INTEGER)")
        return contextlib.closing(db)

    async with conveyor.Owned(setup, turn=lambda db: db) as owned:
        await asyncio.gather(*(owned.call(insert, n) for n in range(50)))
        [(count,)] = await owned.call(lambda db: db.execute("SELECT count(*) FROM t").fetchall())
    assert count == 50 and threads == {threading.get_ident()}


def test_max_waiting_is_a_named_limit() -> None:
    with pytest.raises(conveyor.LimitExceeded, match="max_waiting"):
        conveyor.Owned(lambda: owned_resource(Resource()), max_waiting=0)
