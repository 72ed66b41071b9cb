"""The application's own tables — `links`, `link_clicks`, `link_misses` — on SQLite or PostgreSQL.

These live in the application's database, apart from the queue (conveyor keeps its own). Times
are stored as seconds since the epoch (UTC) so one set of analytics queries serves both engines.

    store = open_store("sqlite:///.conveyor/linkclicks/store.db")   # or "postgresql://..."
    await store.open()          # connects and creates the tables
    link = await store.get_link("spring-sale")
    await store.insert_clicks([event.data for event in events])    # one statement per batch
"""

from __future__ import annotations

import abc
import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from conveyor.demo.models import LinkClickData, LinkMissData

T = TypeVar("T")
Row = tuple[Any, ...]

# Columns the analytics page may group by (they are spliced into SQL, so only these).
GROUPABLE = ("country", "destination", "link_id", "account_id")


@dataclass(frozen=True)
class Link:
    """A smart link: where it sends visitors by default, and per country (ISO 3166-1 alpha-2)."""

    id: str
    account_id: str
    destination: str
    by_country: dict[str, str] = field(default_factory=dict)

    def destination_for(self, country: str | None) -> str:
        if country is None:
            return self.destination
        return self.by_country.get(country.upper(), self.destination)


def _schema(id_column: str, json_type: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS links (
            id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            by_country {json_type} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS link_clicks (
            id {id_column},
            account_id TEXT NOT NULL,
            link_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            country TEXT,
            latitude DOUBLE PRECISION,
            longitude DOUBLE PRECISION,
            clicked_at DOUBLE PRECISION NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS link_clicks_by_time ON link_clicks (clicked_at)",
        f"""CREATE TABLE IF NOT EXISTS link_misses (
            id {id_column},
            link_id TEXT NOT NULL,
            country TEXT,
            missed_at DOUBLE PRECISION NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL)""",
    ]


def _click_row(click: LinkClickData, stored_at: float) -> Row:
    return (
        click.accountId,
        click.id,
        click.destination,
        click.country,
        click.latitude,
        click.longitude,
        click.timestamp.timestamp(),
        stored_at,
    )


class Store(abc.ABC):
    """The links and their clicks. `open()` connects and creates the tables; `close()` releases."""

    #: the engine's parameter marker
    mark = "?"

    def _floor(self, expression: str) -> str:
        # SQLite has floor() only when built with its math functions; times are positive, so a cast does
        return f"CAST({expression} AS INTEGER)"

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def add_links(self, links: Sequence[Link]) -> None:
        """Insert or replace `links`."""

    @abc.abstractmethod
    async def get_link(self, link_id: str) -> Link | None: ...

    @abc.abstractmethod
    async def insert_clicks(self, clicks: Sequence[LinkClickData]) -> int:
        """Store a batch of clicks in one statement and one transaction; returns the row count."""

    @abc.abstractmethod
    async def insert_misses(self, misses: Sequence[LinkMissData]) -> int: ...

    @abc.abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    # -- reads shared by both engines -------------------------------------------------------

    async def count_clicks(self) -> int:
        return int((await self._fetch("SELECT count(*) FROM link_clicks"))[0][0])

    async def totals(self) -> dict[str, int]:
        sql = """SELECT (SELECT count(*) FROM link_clicks), (SELECT count(*) FROM link_misses),
                        (SELECT count(*) FROM links), (SELECT count(DISTINCT account_id) FROM links)"""
        clicks, misses, links, accounts = (await self._fetch(sql))[0]
        return {"clicks": int(clicks), "misses": int(misses), "links": int(links), "accounts": int(accounts)}

    async def first_click_at(self) -> float | None:
        value = (await self._fetch("SELECT min(clicked_at) FROM link_clicks"))[0][0]
        return None if value is None else float(value)

    async def timeline(self, since: float, bucket_seconds: int) -> list[tuple[float, int]]:
        """Clicks per `bucket_seconds` from `since` on, as (bucket start, count), empty buckets left out."""
        m = self.mark
        sql = f"""SELECT {self._floor(f"clicked_at / {m}")} * {m} AS bucket, count(*) FROM link_clicks
                  WHERE clicked_at >= {m} GROUP BY bucket ORDER BY bucket"""
        rows = await self._fetch(sql, (bucket_seconds, bucket_seconds, since))
        return [(float(bucket), int(count)) for bucket, count in rows]

    async def counts_by(self, column: str, limit: int) -> list[tuple[str, int]]:
        """The `limit` most clicked values of `column` (country, destination, ...), most first."""
        if column not in GROUPABLE:
            raise ValueError(f"cannot group clicks by {column!r}; choose one of {GROUPABLE}")
        sql = f"""SELECT coalesce({column}, '??') AS value, count(*) AS n FROM link_clicks
                  GROUP BY value ORDER BY n DESC, value LIMIT {self.mark}"""
        return [(str(value), int(n)) for value, n in await self._fetch(sql, (limit,))]

    async def locations(self, limit: int) -> list[tuple[float, float, int]]:
        """Click counts per place (to a tenth of a degree), as (latitude, longitude, count)."""
        sql = f"""SELECT round(latitude * 10) / 10 AS lat, round(longitude * 10) / 10 AS lon, count(*) AS n
                  FROM link_clicks WHERE latitude IS NOT NULL AND longitude IS NOT NULL
                  GROUP BY lat, lon ORDER BY n DESC LIMIT {self.mark}"""
        return [(float(lat), float(lon), int(n)) for lat, lon, n in await self._fetch(sql, (limit,))]

    async def click_delays(self, since: float = 0.0) -> list[float]:
        """Seconds from click to stored row, for every click since `since`."""
        sql = f"SELECT stored_at - clicked_at FROM link_clicks WHERE clicked_at >= {self.mark}"
        return [float(delay) for (delay,) in await self._fetch(sql, (since,))]


class SQLiteStore(Store):
    """SQLite in WAL mode: one connection for reads and one for writes, each on its own thread, so
    a redirect's lookup never queues behind a bulk insert."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="linkclicks-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="linkclicks-write")
        self._read_db: sqlite3.Connection | None = None
        self._write_db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    async def _on(self, executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def open(self) -> None:
        def create() -> sqlite3.Connection:
            db = self._connect()
            for statement in _schema("INTEGER PRIMARY KEY", "TEXT"):
                db.execute(statement)
            return db

        self._write_db = await self._on(self._writer, create)
        self._read_db = await self._on(self._reader, self._connect)

    async def close(self) -> None:
        for executor, db in ((self._reader, self._read_db), (self._writer, self._write_db)):
            if db is not None:
                await self._on(executor, db.close)
            executor.shutdown(wait=True)
        self._read_db = self._write_db = None

    def _db(self, db: sqlite3.Connection | None) -> sqlite3.Connection:
        if db is None:
            raise RuntimeError("the store is not open: await store.open() first")
        return db

    async def _write_many(self, sql: str, rows: list[Row]) -> int:
        db = self._db(self._write_db)

        def write() -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return len(rows)

        return await self._on(self._writer, write)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        db = self._db(self._read_db)
        return await self._on(self._reader, lambda: db.execute(sql, tuple(params)).fetchall())

    async def add_links(self, links: Sequence[Link]) -> None:
        rows = [(link.id, link.account_id, link.destination, json.dumps(link.by_country)) for link in links]
        await self._write_many("INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?)", rows)

    async def get_link(self, link_id: str) -> Link | None:
        rows = await self._fetch(
            "SELECT id, account_id, destination, by_country FROM links WHERE id = ?", [link_id]
        )
        if not rows:
            return None
        id_, account_id, destination, by_country = rows[0]
        return Link(id_, account_id, destination, json.loads(by_country))

    async def insert_clicks(self, clicks: Sequence[LinkClickData]) -> int:
        now = time.time()
        sql = """INSERT INTO link_clicks (account_id, link_id, destination, country, latitude, longitude,
                 clicked_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
        return await self._write_many(sql, [_click_row(click, now) for click in clicks])

    async def insert_misses(self, misses: Sequence[LinkMissData]) -> int:
        now = time.time()
        rows = [(miss.id, miss.country, miss.timestamp.timestamp(), now) for miss in misses]
        sql = "INSERT INTO link_misses (link_id, country, missed_at, stored_at) VALUES (?, ?, ?, ?)"
        return await self._write_many(sql, rows)


class PostgresStore(Store):
    """PostgreSQL through a small psycopg pool; a batch of clicks is one INSERT ... SELECT unnest(...).

    `schema` puts the tables in their own schema (created if missing), as the tests do.
    """

    mark = "%s"

    def _floor(self, expression: str) -> str:
        return f"floor({expression})"

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema:
            # quoted in the DDL below; in search_path the name is matched verbatim
            kwargs["options"] = f"-c search_path={self.schema}"
        pool = AsyncConnectionPool(self.url, min_size=1, max_size=4, kwargs=kwargs, open=False)
        await pool.open(wait=True)
        self._pool = pool
        async with pool.connection() as conn:
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for statement in _schema("BIGSERIAL PRIMARY KEY", "JSONB"):
                await conn.execute(statement)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if self._pool is None:
            raise RuntimeError("the store is not open: await store.open() first")
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, tuple(params))
            return list(await cursor.fetchall())

    async def add_links(self, links: Sequence[Link]) -> None:
        from psycopg.types.json import Jsonb

        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(
                """INSERT INTO links VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET
                   account_id = excluded.account_id, destination = excluded.destination,
                   by_country = excluded.by_country""",
                [(link.id, link.account_id, link.destination, Jsonb(link.by_country)) for link in links],
            )

    async def get_link(self, link_id: str) -> Link | None:
        rows = await self._fetch(
            "SELECT id, account_id, destination, by_country FROM links WHERE id = %s", [link_id]
        )
        if not rows:
            return None
        id_, account_id, destination, by_country = rows[0]
        return Link(id_, account_id, destination, dict(by_country))

    async def insert_clicks(self, clicks: Sequence[LinkClickData]) -> int:
        if not clicks:
            return 0
        columns = list(zip(*(_click_row(click, time.time()) for click in clicks), strict=True))
        sql = """INSERT INTO link_clicks (account_id, link_id, destination, country, latitude, longitude,
                 clicked_at, stored_at)
                 SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                      %s::float8[], %s::float8[], %s::float8[], %s::float8[])"""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, [list(column) for column in columns])
            return int(cursor.rowcount)

    async def insert_misses(self, misses: Sequence[LinkMissData]) -> int:
        if not misses:
            return 0
        now = time.time()
        sql = """INSERT INTO link_misses (link_id, country, missed_at, stored_at)
                 SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[])"""
        params = [
            [miss.id for miss in misses],
            [miss.country for miss in misses],
            [miss.timestamp.timestamp() for miss in misses],
            [now] * len(misses),
        ]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return int(cursor.rowcount)


def open_store(url: str) -> Store:
    """`sqlite:///path.db` or `postgresql://...[?schema=name]`; call `await store.open()` next."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path:
            raise ValueError(f"invalid SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
        return SQLiteStore(path)
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        schema = query.pop("schema", [None])[-1]
        plain = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return PostgresStore(plain, schema=schema)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///... or postgresql://...")
