"""The shared-resource pattern: one task owns a connection that is not safe to share.

A sqlite3 connection has one transaction at a time: tasks interleaving their statements on it
would commit or roll back each other's work. So one task owns it, and everybody else puts a
request on the owner's asyncio queue and awaits the answer through a future. The owner takes
every request waiting and runs them in one transaction (cheaper than one each), then answers
each future with its rows, or with its own exception.

Run it: `python examples/shared_resource.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from typing import Any

CLIENTS = 5
CLICKS_PER_CLIENT = 6
MAX_WAITING_REQUESTS = 100  # callers wait (backpressure) when the owner falls this far behind


@dataclass
class Request:
    sql: str
    params: tuple[Any, ...] = ()
    reply: asyncio.Future[list[tuple[Any, ...]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ConnectionOwner:
    """The only code that touches the connection; `ask` is how every other task uses it."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.requests: asyncio.Queue[Request | None] = asyncio.Queue(MAX_WAITING_REQUESTS)
        self.served = 0
        self.transactions = 0

    async def ask(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        request = Request(sql, params)
        await self.requests.put(request)
        return await request.reply

    async def stop(self) -> None:
        await self.requests.put(None)

    async def run(self) -> None:
        connection = sqlite3.connect(self.path)
        try:
            connection.execute("CREATE TABLE clicks (link TEXT NOT NULL, client INTEGER NOT NULL)")
            while True:
                batch = [await self.requests.get()]
                while not self.requests.empty():
                    batch.append(self.requests.get_nowait())
                stop = None in batch
                self._serve(connection, [request for request in batch if request is not None])
                if stop:
                    return
        finally:
            connection.close()

    def _serve(self, connection: sqlite3.Connection, batch: list[Request]) -> None:
        if not batch:
            return
        with connection:  # one transaction for the whole batch
            for request in batch:
                try:
                    rows = connection.execute(request.sql, request.params).fetchall()
                except sqlite3.Error as exc:
                    request.reply.set_exception(exc)  # a failed statement undoes only itself
                else:
                    request.reply.set_result(rows)
                self.served += 1
        self.transactions += 1


async def client(owner: ConnectionOwner, number: int) -> None:
    for click in range(CLICKS_PER_CLIENT):
        await owner.ask("INSERT INTO clicks (link, client) VALUES (?, ?)", f"lnk_{click % 3}", number)


async def main() -> None:
    owner = ConnectionOwner()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(owner.run())
        async with asyncio.TaskGroup() as clients:
            for number in range(CLIENTS):
                clients.create_task(client(owner, number))
        try:
            await owner.ask("SELECT * FROM no_such_table")
        except sqlite3.OperationalError as exc:
            print(f"a bad request fails alone: {exc}")
        [(total,)] = await owner.ask("SELECT count(*) FROM clicks")
        per_link = await owner.ask("SELECT link, count(*) FROM clicks GROUP BY link ORDER BY link")
        await owner.stop()
    print(f"total clicks: {total}; per link: {dict(per_link)}")
    print(f"served {owner.served} request(s) on one connection in {owner.transactions} transaction(s)")


if __name__ == "__main__":
    asyncio.run(main())
