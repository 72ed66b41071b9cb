"""The shared-resource pattern with `conveyor.Owned`: one task owns a connection that is not safe
to share.

A sqlite3 connection has one transaction at a time: tasks interleaving their statements on it
would commit or roll back each other's work. So one task owns it (`conveyor.Owned`), and every
other task hands it a call and awaits the answer: `await db.call(fn, ...)`. The owner takes
every call waiting and runs them in one transaction (`turn=`: cheaper than one each), then
answers each caller with its rows, or with its own exception. At most MAX_WAITING_CALLS wait;
past that, callers wait for room (backpressure).

Run it: `python examples/shared_resource.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import conveyor

CLIENTS = 5
CLICKS_PER_CLIENT = 6
MAX_WAITING_CALLS = 100


class Counts:
    """What the owner did: calls served and transactions committed."""

    def __init__(self) -> None:
        self.served = 0
        self.transactions = 0


def open_database() -> contextlib.closing[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE clicks (link TEXT NOT NULL, client INTEGER NOT NULL)")
    return contextlib.closing(connection)  # closed when the owner stops


def query(counts: Counts) -> Any:
    def run(connection: sqlite3.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        counts.served += 1
        return connection.execute(sql, params).fetchall()  # a failing statement fails its call alone

    return run


def transaction(counts: Counts) -> Any:
    @contextlib.contextmanager
    def turn(connection: sqlite3.Connection) -> Any:
        with connection:  # one transaction for every call of the turn
            yield
        counts.transactions += 1

    return turn


async def client(db: conveyor.Owned[sqlite3.Connection], run: Any, number: int) -> None:
    for click in range(CLICKS_PER_CLIENT):
        await db.call(run, "INSERT INTO clicks (link, client) VALUES (?, ?)", f"lnk_{click % 3}", number)


async def main() -> None:
    counts = Counts()
    run = query(counts)
    db = conveyor.Owned(open_database, max_waiting=MAX_WAITING_CALLS, turn=transaction(counts))
    async with db:
        async with asyncio.TaskGroup() as clients:
            for number in range(CLIENTS):
                clients.create_task(client(db, run, number))
        try:
            await db.call(run, "SELECT * FROM no_such_table")
        except sqlite3.OperationalError as exc:
            print(f"a bad request fails alone: {exc}")
        [(total,)] = await db.call(run, "SELECT count(*) FROM clicks")
        per_link = await db.call(run, "SELECT link, count(*) FROM clicks GROUP BY link ORDER BY link")
    print(f"total clicks: {total}; per link: {dict(per_link)}")
    print(f"served {counts.served} request(s) on one connection in {counts.transactions} transaction(s)")


if __name__ == "__main__":
    asyncio.run(main())
