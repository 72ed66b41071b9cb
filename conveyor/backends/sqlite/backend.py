"""sqlite:///path.db — embedded and durable; several processes on one machine share the file.

WAL journal, `BEGIN IMMEDIATE` with a busy timeout so writers from several processes queue up
instead of failing, and `synchronous=FULL` so a message is on disk when `send` returns.
URL options: `?synchronous=normal` (faster; a power cut may lose the last transactions, never
corrupt the file), `?busy_timeout=5000` (ms), `?poll_interval=0.05` (s).

Each backend owns one connection on one thread; every operation is one transaction there.
Leases commit without an fsync even under `synchronous=full` (see `_write_group`).
Wake-ups: consumers in the same process are woken at once by the writer; consumers in other
processes at once through the wake file (wake.py, Linux). Failing that, other processes' commits
are noticed by a waiting consumer within `poll_interval` seconds: every poll it stats the WAL file
(on the event loop, a microsecond) and only when that changed asks `PRAGMA data_version` on the
SQLite thread. A commit that leaves the WAL's size and mtime as they were (a rewrite from its
start within one clock tick) is still caught by a full check every FULL_CHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from conveyor.backends.base import Backend, handed_token, new_token
from conveyor.backends.partitioning import dedup_key
from conveyor.backends.scripts import load_named
from conveyor.backends.sqlite.storage import (
    SHORT_OF_SPACE_MESSAGES,
    Reserve,
    checkpoint_pages,
    is_busy,
    is_full,
    storage_error,
)
from conveyor.backends.sqlite.wake import WakeFile, WakeWatch
from conveyor.errors import (
    InvalidURL,
    MessageLeased,
    QueueAlreadyExists,
    QueueNotFound,
    StorageFull,
    StorageUnusable,
)
from conveyor.headers import dump_headers, load_headers, with_dead_letter
from conveyor.limits import backlog_added, check_room
from conveyor.types import (
    SYSTEM_CLOCK,
    Clock,
    ContentType,
    DeadLetterInfo,
    Lease,
    LeasedMessage,
    Outcomes,
    OutgoingMessage,
    PullConsumer,
    QueueInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
    Subscription,
    SystemClock,
    WorkerInfo,
)

T = TypeVar("T")
# a write transaction waiting for the writer thread: its function, its caller's future, whether it
# is a lease (see `_write_group`), the caller's event loop, and whether it grows the database
# (sends and new queues: see storage.py)
_Pending = tuple[
    Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool, asyncio.AbstractEventLoop, bool
]
Q = load_named("conveyor.backends.sqlite", "queries.sql")
# How the statements that take a set of rows name them: a JSON array of rowids, or the range
# from :lo to :hi when the rows are every rowid in it (see `_by_range`).
ROWS_LISTED = "seq IN (SELECT value FROM json_each(:seqs))"
ROWS_IN_RANGE = "seq BETWEEN :lo AND :hi"
SCHEMA_VERSION = 7
MIGRATIONS = {
    1: Q["schema_v1"],
    2: Q["schema_v2"],
    3: Q["schema_v3"],
    4: Q["schema_v4"],
    5: Q["schema_v5"],
    6: Q["schema_v6"],
    7: Q["schema_v7"],
}

DEFAULT_BUSY_TIMEOUT_MS = 5_000
DEFAULT_POLL_INTERVAL = 0.05
# A waiting consumer asks PRAGMA data_version at least this often, whatever the WAL file shows.
FULL_CHECK_SECONDS = 1.0
SYNCHRONOUS_MODES = ("full", "normal")
# Pause between tries of the switch to WAL while another process holds the new file (see _use_wal).
WAL_SWITCH_RETRY_SECONDS = 0.01

# The tables of conveyor's schema, and the ones every version has.
CONVEYOR_TABLES_LIKE = "conveyor\\_%"
CORE_TABLES = frozenset({"conveyor_queues", "conveyor_messages"})

log = logging.getLogger("conveyor.sqlite")

# In-process wake-ups between backends on the same file: path -> notify callbacks.
_listeners: dict[str, set[Callable[[str], None]]] = {}
_listeners_lock = threading.Lock()


def _notify_local(path: str, queues: tuple[str, ...]) -> None:
    with _listeners_lock:
        callbacks = list(_listeners.get(path, ()))
    for callback in callbacks:
        for queue in queues:
            callback(queue)


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.netloc:
        raise InvalidURL(f"invalid SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidURL(f"invalid SQLite URL {url!r}: no file path (e.g. sqlite:///conveyor.db)")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    known = {"synchronous", "busy_timeout", "poll_interval"}
    unknown = set(options) - known
    if unknown:
        raise InvalidURL(f"unknown SQLite URL option(s) {sorted(unknown)}; known: {sorted(known)}")
    if options.get("synchronous", "full").lower() not in SYNCHRONOUS_MODES:
        raise InvalidURL(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {options['synchronous']!r}")
    return path, options


def _pull_consumer(settings: QueueSettings) -> str | None:
    return None if settings.pull_consumer is None else settings.pull_consumer.to_json()


def _info(row: tuple[Any, ...]) -> QueueInfo:
    return QueueInfo(
        name=row[1],
        settings=QueueSettings(
            delivery_delay=row[2],
            retention_seconds=row[3],
            max_backlog_messages=row[6],
            max_backlog_bytes=row[7],
            dedup_window_seconds=row[8],
            pull_consumer=PullConsumer.from_json(row[9]),
            partitions=row[10],
        ),
        paused=bool(row[4]),
        created_at=row[5],
    )


def _subscription(row: tuple[Any, ...]) -> Subscription:
    types = None if row[2] is None else tuple(json.loads(row[2]))
    return Subscription(topic=row[0], queue=row[1], types=types, created_at=row[3])


def _dead_letter(text: str | None) -> DeadLetterInfo | None:
    return None if text is None else DeadLetterInfo.from_dict(json.loads(text))


def _ranged(statement: str) -> str:
    """`statement` with its rows named by the range :lo to :hi instead of :seqs."""
    if ROWS_LISTED not in statement:
        raise ValueError(f"no {ROWS_LISTED!r} in {statement!r}")
    return statement.replace(ROWS_LISTED, ROWS_IN_RANGE)


# the statements that also come with their rows named by a range
RANGED = {name: _ranged(Q[name]) for name in ("lease", "lease_fresh", "ack", "retry", "begin_all")}


def _by_range(seqs: Collection[int]) -> tuple[int, int] | None:
    """(lowest, highest) when `seqs` (distinct rowids) are every rowid from one to the other, as
    the rows of a backlog leased in order usually are; else None. A range names exactly those
    rows: no other row can have a rowid inside it."""
    if not seqs:
        return None
    low, high = min(seqs), max(seqs)
    return (low, high) if high - low + 1 == len(seqs) else None


class SQLiteBackend(Backend):
    engine = "sqlite"
    # Leases name their row (seq, the rowid): settling needs no search of the id index.
    lease_rows = True
    # Each settle is a commit on the one writer thread (WAL pages, an fsync in `full` mode), so
    # fewer, larger settles drain faster (measured in bench/README.md).
    settling_outcomes = 1_000

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock=clock)
        self.path, options = parse_sqlite_url(url)
        self.synchronous = options.get("synchronous", "full").upper()
        self.busy_timeout_ms = int(options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT_MS))
        self.poll_interval = float(options.get("poll_interval", DEFAULT_POLL_INTERVAL))
        self._key = self.path if self.path == ":memory:" else os.path.abspath(self.path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # held by whoever uses `_conn`: the writer thread, or a lone send on the event loop
        self._conn_lock = threading.Lock()
        # `_conn`'s busy timeout now: 0 after a lone send's try on the event loop, which leaves it
        # so for the next one; the writer thread sets it back before it uses the connection
        self._busy_timeout_now = self.busy_timeout_ms
        # A second connection, on a thread of its own, for reads that scan a whole queue (stats,
        # peek): WAL lets it read while the first one writes, so a large backlog's scan never
        # holds up leases and settles. Opened on first use.
        self._scan_executor: ThreadPoolExecutor | None = None
        self._scan_conn: sqlite3.Connection | None = None
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._waiters_lock = threading.Lock()
        # Write transactions waiting for the next group commit (with their durability). The
        # writer thread takes them itself, group after group, with no hop through the event loop
        # between groups: a busy loop (say, handlers decoding a batch) never leaves it idle.
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._writing = False  # a drain of `_pending` is queued or running on the writer thread
        self._unfinished: set[asyncio.Future[Any]] = set()
        # the connection's current `PRAGMA synchronous` (switched per group, see _write_group)
        self._synchronous_now = self.synchronous
        # room kept for draining on a full disk (storage.py); none for `:memory:`
        self._reserve: Reserve | None = None
        self._disk_full = False  # the last growing write found no room (logged once per episode)
        # cross-process wake-ups (wake.py): touched after commits that make messages ready (once
        # per loop iteration), watched while a consumer waits (opened on the first wait)
        self._wake_file = None if self.path == ":memory:" else WakeFile(self._key)
        self._commits = 0  # write groups committed (on the writer thread)
        self._touched_after = -1  # the count of `_commits` at the last touch
        self._wake_watch: WakeWatch | None = None
        self._wake_watch_tried = False

    def sibling(self) -> SQLiteBackend:
        return SQLiteBackend(self.url, clock=self.clock)

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            # nothing stays half open: the next call opens again, and says again why it cannot
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise
        with _listeners_lock:
            _listeners.setdefault(self._key, set()).add(self._wake)

    def _open(self) -> None:
        # check_same_thread off: a lone send may run on the event loop (see _write_inline), never
        # at the same time as the writer thread (_conn_lock)
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            self._schema_version(conn)  # a file conveyor will not use is refused before WAL changes it
            self._use_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self.path != ":memory:":
                self._reserve = Reserve(self.path)
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages(self._reserve.size, page_size)}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._synchronous_now = self.synchronous
        self._busy_timeout_now = self.busy_timeout_ms
        self._conn = conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, retrying for up to the busy timeout. While another process sets up the
        same new file, SQLite can refuse the switch at once ("database is locked") without
        calling the busy handler, so the wait is done here."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(WAL_SWITCH_RETRY_SECONDS)

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        """conveyor's schema version of the file (0: none yet). A file whose schema conveyor did
        not make, or made newer than this conveyor knows, is refused as it is."""
        # both reads in one transaction: another process migrating the new file in between would
        # otherwise show its tables beside the version read before it committed them
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
                    (CONVEYOR_TABLES_LIKE,),
                )
            }
        finally:
            if own:
                conn.execute("COMMIT")
        if version > SCHEMA_VERSION:
            raise StorageUnusable(
                f"{self.path} has conveyor schema v{version}, newer than this conveyor (v{SCHEMA_VERSION})"
            )
        if version == 0 and tables:
            raise StorageUnusable(
                f"{self.path} holds tables of conveyor's names that conveyor did not create "
                f"({', '.join(sorted(tables))}); conveyor will not use or change them: "
                "point the URL at another file"
            )
        if version > 0 and not tables >= CORE_TABLES:
            raise StorageUnusable(
                f"{self.path} says it has conveyor schema v{version} (PRAGMA user_version) but lacks "
                f"conveyor's tables ({', '.join(sorted(CORE_TABLES - tables))}): another program's "
                "database? Point the URL at another file"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(conn)  # again, now that no other process can change it
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        with _listeners_lock:
            _listeners.get(self._key, set()).discard(self._wake)
        if self._wake_watch is not None:
            self._wake_watch.close_from(asyncio.get_running_loop())
            self._wake_watch, self._wake_watch_tried = None, False
        if self._unfinished:  # writes already requested still commit
            await asyncio.wait(list(self._unfinished))
        await self._run(self._close_connection)
        if self._wake_file is not None:
            self._wake_file.close()
        self._executor.shutdown(wait=True)
        self._executor = None
        if self._scan_executor is not None:
            scan_executor, self._scan_executor = self._scan_executor, None
            await asyncio.get_running_loop().run_in_executor(scan_executor, self._close_scan_connection)
            scan_executor.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_scan_connection(self) -> None:
        if self._scan_conn is not None:
            self._scan_conn.close()
            self._scan_conn = None

    async def _run(self, function: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the SQLite backend is not connected")

        def locked() -> T:
            with self._conn_lock:
                if self._conn is not None:
                    self._set_busy_timeout(self._conn, self.busy_timeout_ms)
                return function()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, locked)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from exc

    async def _transaction(
        self,
        function: Callable[[sqlite3.Connection], T],
        *,
        lease: bool = False,
        grows: bool = False,
        inline: bool = False,
    ) -> T:
        """Run `function` in a write transaction and return once it is committed.

        Group commit: transactions requested while another group commits are written together,
        one COMMIT (one fsync) for all, each in its own savepoint so a failing one rolls back
        only itself. Concurrent batches of a consumer settle together this way.
        `lease=True` marks a lease, lease extension or release: see `_write_group`.
        `grows=True` marks a write that makes the database bigger (a send, a new queue): on a full
        disk it fails at once, and it never uses the room kept for draining (storage.py).
        `inline=True` marks a small write that may run on the event loop (see `_write_inline`).
        """
        if self._executor is None:
            raise RuntimeError("the SQLite backend is not connected")
        if inline:
            done, inline_result = self._write_inline(function, grows)
            if done:
                return cast(T, inline_result)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._unfinished.add(future)
        future.add_done_callback(self._unfinished.discard)
        with self._pending_lock:
            self._pending.append((function, future, lease, loop, grows))
            start, self._writing = not self._writing, True
        if start:
            self._executor.submit(self._write_pending)
        try:
            result: T = await future
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from exc
        return result

    def _write_inline(self, function: Callable[[sqlite3.Connection], Any], grows: bool) -> tuple[bool, Any]:
        """Commit a lone small write here, on the event loop, when nothing else uses the
        connection and nothing waits for the writer thread: the hand-off to that thread and back
        cost a lone sequential send ten times its SQL (bench/README.md). Only with
        `synchronous=normal` (a commit without an fsync), and only if the write lock is free at
        once (`busy_timeout` 0 for the try), so the loop never waits for a disk or another
        process. (False, None) when it did not run: the caller queues it as usual."""
        conn = self._inline_connection(grows)
        if conn is None:
            return False, None
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False, None  # another process writes: wait on the writer thread
            try:
                result = function(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise storage_error(exc, self.path) from exc
                raise
            self._commits += 1
            return True, result
        finally:
            self._conn_lock.release()

    def _insert_inline(self, statement: str, params: Sequence[Any]) -> int | None:
        """Run one INSERT on the event loop in autocommit, under the conditions of
        `_write_inline`: a single statement is its own atomic transaction, so it needs no BEGIN
        IMMEDIATE and COMMIT around it (two of a lone send's three statements, a sixth of its
        SQLite time). The rows it stored, or None when it did not run (nothing written: the
        caller queues the write as usual)."""
        conn = self._inline_connection(grows=True)
        if conn is None:
            return None
        try:
            try:
                rows = conn.execute(statement, params).rowcount
            except sqlite3.Error as exc:
                if is_busy(exc):
                    return None  # another process writes: wait on the writer thread
                raise storage_error(exc, self.path) from exc
            self._commits += 1
            return rows
        finally:
            self._conn_lock.release()

    def _inline_connection(self, grows: bool) -> sqlite3.Connection | None:
        """The connection, held (`_conn_lock`, for the caller to release) with a busy timeout of
        0, if a write may run on the event loop now (see `_write_inline`); else None."""
        if self.synchronous != "NORMAL" or self._writing or self._pending:
            return None
        if not self._conn_lock.acquire(blocking=False):
            return None
        conn = self._conn
        if conn is None or conn.in_transaction or (grows and not self._room_to_grow()):
            self._conn_lock.release()
            return None
        self._set_busy_timeout(conn, 0)
        return conn

    def _set_busy_timeout(self, conn: sqlite3.Connection, milliseconds: int) -> None:
        """Give `conn` this busy timeout (a statement only when it changes: a lone send's try
        on the event loop sets 0, the writer thread its own before it uses the connection). In a
        write transaction no statement waits on the busy handler (WAL: the write lock is held), so
        a lone send's statements after its BEGIN IMMEDIATE run the same under 0."""
        if self._busy_timeout_now != milliseconds:
            conn.execute(f"PRAGMA busy_timeout = {milliseconds}")
            self._busy_timeout_now = milliseconds

    def _write_pending(self) -> None:
        """On the writer thread: commit one group of what is pending, queue itself again while
        more is pending, and hand the outcomes to the callers' loops. Requeuing (rather than
        looping) lets reads waiting for the same thread run between groups."""
        with self._pending_lock:
            group, self._pending = self._pending, []
        with self._conn_lock:
            if self._conn is not None:
                self._set_busy_timeout(self._conn, self.busy_timeout_ms)
            outcomes = self._write_outcomes(group)
        self._commits += 1
        with self._pending_lock:
            self._writing = bool(self._pending)
        if self._writing and self._executor is not None:
            self._executor.submit(self._write_pending)
        for loop in {loop for _, _, _, loop, _ in group}:
            loop.call_soon_threadsafe(_settle_futures, group, outcomes, loop)

    def _write_outcomes(self, group: list[_Pending]) -> list[tuple[bool, Any]]:
        """Commit `group`, one outcome per transaction. On a disk without room, the writes that
        grow the database fail at once; drains that failed for want of space run again with the
        reserve's room (storage.py)."""
        outcomes: list[tuple[bool, Any] | None] = [None] * len(group)
        if any(grows for *_, grows in group) and not self._room_to_grow():
            full = StorageFull(
                f"the disk holding {self.path} is full: nothing was written. Free space on it, or "
                "drain the queue: consumers can still ack and delete (docs/sqlite.md, 'A full disk')"
            )
            outcomes = [(False, full) if grows else None for *_, grows in group]
        todo = [index for index, outcome in enumerate(outcomes) if outcome is None]
        written = self._write_safely([group[i][0] for i in todo], all(group[i][2] for i in todo))
        drains = []
        for index, outcome in zip(todo, written, strict=True):
            outcomes[index] = outcome
            if not outcome[0] and is_full(outcome[1]) and not group[index][4]:
                drains.append(index)
        if drains and self._reserve is not None:
            again = self._drain_on_full_disk([group[i][0] for i in drains])
            for index, outcome in zip(drains, again, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _write_safely(
        self, functions: list[Callable[[sqlite3.Connection], Any]], leases_only: bool
    ) -> list[tuple[bool, Any]]:
        if not functions:
            return []
        try:
            return self._write_group(functions, leases_only)
        except BaseException as exc:  # every caller of the group gets it
            return [(False, exc)] * len(functions)

    def _room_to_grow(self) -> bool:
        """May writes that grow the database go? (Logged when the answer changes.)"""
        try:
            room = self._reserve is None or self._reserve.room_to_grow() or self._room_inside()
        except OSError:  # the file system would not say: let SQLite find out
            room = True
        if room and self._disk_full:
            log.warning("the disk holding %s has room again: sends go again", self.path)
        elif not room and not self._disk_full:
            log.warning(
                "the disk holding %s is full: sends fail with StorageFull until it has room again "
                "(space freed, or messages drained); consumers can still lease, ack and delete",
                self.path,
            )
        self._disk_full = not room
        return room

    def _room_inside(self) -> bool:
        """Does the file hold a reserve's worth of free pages (deleted messages' room), which sends
        fill without growing it, so drains keep the disk's room?"""
        assert self._reserve is not None and self._conn is not None
        free_pages = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return bool(free_pages * page_size >= self._reserve.size)

    def _drain_on_full_disk(
        self, functions: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        """Drains (leases, settles, deletes) that failed for want of space: give the reserve
        back, empty the WAL into the database, and run them again."""
        assert self._reserve is not None and self._conn is not None
        if self._reserve.give_back():
            log.warning(
                "the disk holding %s is full: gave its reserve back so that consumers can ack and delete",
                self.path,
            )
            self._disk_full = True
        self._checkpoint()
        outcomes = self._write_safely(functions, False)
        self._checkpoint()  # what the drain freed in the WAL goes back to the disk
        return outcomes

    def _checkpoint(self) -> None:
        assert self._conn is not None
        # a busy reader or no room yet leaves the WAL as it was: the next try may do better
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _write_group(
        self, functions: list[Callable[[sqlite3.Connection], Any]], leases_only: bool = False
    ) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        # A group of only leases / lease extensions / begins / releases commits without an fsync. A process
        # crash still loses nothing (the WAL is in the OS's hands); a power cut can only forget the
        # latest leases: those messages come back with that attempt uncounted, which at-least-once
        # allows. The next durable commit fsyncs the WAL, lease frames included. Sends, settles,
        # moves and queue changes keep the URL's mode. A group mixing both kinds is durable.
        synchronous = "NORMAL" if leases_only else self.synchronous
        if synchronous != self._synchronous_now:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._synchronous_now = synchronous
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(functions) == 1:
                outcomes.append((True, functions[0](conn)))
            else:
                for function in functions:
                    conn.execute("SAVEPOINT conveyor_op")
                    try:
                        outcomes.append((True, function(conn)))
                    except Exception as exc:
                        if not conn.in_transaction:
                            raise  # SQLite rolled the whole group back (a full disk can): all fail
                        conn.execute("ROLLBACK TO conveyor_op")
                        outcomes.append((False, exc))
                    conn.execute("RELEASE conveyor_op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (a full disk) leaves it open
                conn.execute("ROLLBACK")
            raise
        return outcomes

    async def _scan(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run a long read on the scan connection (see __init__); `:memory:` has only one."""
        if self.path == ":memory:":
            return await self._read(function)
        if self._executor is None:
            raise RuntimeError("the SQLite backend is not connected")
        if self._scan_executor is None:
            self._scan_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-sqlite-scan")

        def run() -> T:
            if self._scan_conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                self._scan_conn = conn
            return function(self._scan_conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._scan_executor, run)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from exc

    async def _read(self, function: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._conn is not None
            return function(self._conn)

        return await self._run(run)

    @staticmethod
    def _queue_row(conn: sqlite3.Connection, name: str) -> tuple[Any, ...]:
        row = conn.execute(Q["queue_by_name"], (name,)).fetchone()
        if row is None:
            raise QueueNotFound(name)
        return tuple(row)

    # -- wake-ups ----------------------------------------------------------------------------

    def _wake(self, queue: str) -> None:
        with self._waiters_lock:
            waiters = self._waiters.pop(queue, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def _notify(self, *queues: str) -> None:
        """Wake the waiters of `queues` (each named once), here and in other processes."""
        if not queues:
            return  # a settle of acks only: nothing became ready
        _notify_local(self._key, queues)
        # one touch a commit: the senders of one group commit touch once
        if (
            self._wake_file is not None
            and self._touched_after != self._commits
            and self._executor is not None
        ):
            self._touched_after = self._commits
            self._wake_file.touch()

    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        def state(conn: sqlite3.Connection) -> tuple[bool, float | None, int]:
            row = conn.execute(Q["wake_state"], (queue,)).fetchone()
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if row is None:
                return False, None, data_version
            return bool(row[0]), row[1], data_version

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            self._waiters.setdefault(queue, []).append((loop, future))
        watch = self._wake_watch_on(loop)
        written: asyncio.Future[None] | None = None
        try:
            wal = self._wal_mark()  # before the read: a commit after it changes the file
            if watch is not None:
                written = watch.next_write()  # before the read, for the same reason
            paused, due, version = await self._read(state)
            if due is not None and not paused:
                timeout = min(timeout, due - self.clock.now())
            deadline = loop.time() + max(0.0, timeout)
            checked_at = loop.time()
            while not future.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                waits: list[asyncio.Future[None]] = [future] if written is None else [future, written]
                await asyncio.wait(
                    waits, timeout=min(self.poll_interval, remaining), return_when=asyncio.FIRST_COMPLETED
                )
                if future.done():
                    return
                woken = written is not None and written.done()
                if woken and watch is not None:
                    written = watch.next_write()
                now, mark = loop.time(), self._wal_mark()
                if not woken and mark == wal and now - checked_at < FULL_CHECK_SECONDS:
                    continue
                wal, checked_at = mark, now
                paused, due, current = await self._read(state)
                if current == version:
                    continue
                version = current
                if not paused and due is not None:
                    wait = due - self.clock.now()
                    if wait <= 0:
                        return  # another process made a message ready: look again
                    deadline = min(deadline, loop.time() + wait)
        finally:
            if written is not None:
                written.cancel()
            with self._waiters_lock:
                waiters = self._waiters.get(queue)
                if waiters is not None and (loop, future) in waiters:
                    waiters.remove((loop, future))

    def _wake_watch_on(self, loop: asyncio.AbstractEventLoop) -> WakeWatch | None:
        """The wake file's watch for waits on `loop` (the first loop that waits; others poll)."""
        if self._wake_watch is None and not self._wake_watch_tried:
            self._wake_watch_tried = True
            self._wake_watch = WakeWatch.open(self.path, loop)
        if self._wake_watch is None or not self._wake_watch.on(loop):
            return None
        return self._wake_watch

    def _wal_mark(self) -> tuple[int, int, int] | None:
        """The WAL file's identity, size and mtime: any commit by any process writes that file."""
        if self.path == ":memory:":
            return None
        try:
            stat = os.stat(f"{self.path}-wal")
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        def create(conn: sqlite3.Connection) -> QueueInfo:
            row = conn.execute(Q["queue_by_name"], (name,)).fetchone()
            if row is not None:
                if exist_ok:
                    return _info(row)
                raise QueueAlreadyExists(name)
            conn.execute(
                Q["insert_queue"],
                (
                    name,
                    settings.delivery_delay,
                    settings.retention_seconds,
                    self.clock.now(),
                    settings.max_backlog_messages,
                    settings.max_backlog_bytes,
                    settings.dedup_window_seconds,
                    _pull_consumer(settings),
                    settings.partitions,
                ),
            )
            return _info(conn.execute(Q["queue_by_name"], (name,)).fetchone())

        return await self._transaction(create, grows=True)

    async def get_queue(self, name: str) -> QueueInfo | None:
        row = await self._read(lambda conn: conn.execute(Q["queue_by_name"], (name,)).fetchone())
        return None if row is None else _info(row)

    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        def update(conn: sqlite3.Connection) -> QueueInfo:
            self._queue_row(conn, name)
            conn.execute(
                Q["update_queue"],
                (
                    settings.delivery_delay,
                    settings.retention_seconds,
                    settings.max_backlog_messages,
                    settings.max_backlog_bytes,
                    settings.dedup_window_seconds,
                    _pull_consumer(settings),
                    name,
                ),
            )
            return _info(self._queue_row(conn, name))

        return await self._transaction(update)

    async def delete_queue(self, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            row = conn.execute(Q["queue_by_name"], (name,)).fetchone()
            if row is None:
                return False
            conn.execute(Q["delete_queue_messages"], (row[0],))
            conn.execute(Q["delete_queue_dedup"], (row[0],))
            conn.execute(Q["delete_queue"], (row[0],))
            conn.execute(Q["delete_queue_subscriptions"], (name,))
            return True

        return await self._transaction(delete)

    async def list_queues(self) -> list[QueueInfo]:
        rows = await self._read(lambda conn: conn.execute(Q["list_queues"]).fetchall())
        return [_info(row) for row in rows]

    async def set_paused(self, name: str, paused: bool) -> None:
        def pause(conn: sqlite3.Connection) -> None:
            self._queue_row(conn, name)
            conn.execute(Q["set_paused"], (int(paused), name))

        await self._transaction(pause)
        if not paused:
            self._notify(name)

    # -- topic subscriptions ------------------------------------------------------------------

    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        types_json = None if types is None else json.dumps(list(types))
        row = await self._transaction(
            lambda conn: conn.execute(
                Q["upsert_subscription"], (topic, queue, types_json, self.clock.now())
            ).fetchone()
        )
        return _subscription(row)

    async def remove_subscription(self, topic: str, queue: str) -> bool:
        count = await self._transaction(
            lambda conn: conn.execute(Q["delete_subscription"], (topic, queue)).rowcount
        )
        return bool(count)

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        rows = await self._read(lambda conn: conn.execute(Q["list_subscriptions"], (topic, topic)).fetchall())
        return [_subscription(row) for row in rows]

    # -- worker heartbeats ---------------------------------------------------------------------

    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        def record(conn: sqlite3.Connection) -> None:
            conn.execute(Q["delete_old_workers"], (worker.seen_at - ttl,))
            conn.execute(Q["record_worker"], (worker.id, worker.seen_at, json.dumps(worker.to_dict())))

        # a heartbeat is no drain: on a full disk it fails at once and leaves the room kept for acks
        await self._transaction(record, grows=True)

    async def list_workers(self, since: float) -> list[WorkerInfo]:
        rows = await self._read(lambda conn: conn.execute(Q["list_workers"], (since,)).fetchall())
        return [WorkerInfo.from_dict(json.loads(row[0])) for row in rows]

    async def forget_worker(self, worker_id: str) -> None:
        await self._transaction(lambda conn: conn.execute(Q["forget_worker"], (worker_id,)))

    # -- messages ----------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        def send(conn: sqlite3.Connection) -> list[str]:
            queues = {name: self._queue_row(conn, name) for name in {m.queue for m in messages}}
            now = self.clock.now()
            ids = [m.id for m in messages]
            stored = messages
            if any(m.dedup_id is not None for m in messages):
                ids = self._deduplicate(conn, messages, queues, now)
                stored = [m for m, stored_as in zip(messages, ids, strict=True) if stored_as == m.id]
            # a deduplicated message takes no room; a refusal rolls its claims back with the rest
            self._check_room(conn, queues, stored)
            conn.executemany(
                Q["insert_message"],
                [
                    (
                        m.id,
                        queues[m.queue][0],
                        m.body,
                        m.content_type,
                        now,
                        now + (queues[m.queue][2] if m.delay_seconds is None else m.delay_seconds),
                        None if m.dead_letter is None else json.dumps(m.dead_letter.to_dict()),
                        None if m.headers is None else dump_headers(m.headers),
                        m.group,
                    )
                    for m in stored
                ],
            )
            return ids

        if len(messages) == 1:  # a lone send: it may commit on the event loop (_insert_inline)
            [message] = messages
            ids = await self._send_alone(message, send)
            self._notify(message.queue)
            return ids
        ids = await self._transaction(send, grows=True)
        self._notify(*{m.queue for m in messages})
        return ids

    async def _send_alone(
        self, message: OutgoingMessage, send: Callable[[sqlite3.Connection], list[str]]
    ) -> list[str]:
        """A lone send: one statement that reads its queue and inserts (in autocommit on the
        event loop when it may run there); anything else (a queue missing or bounded, a dedup id,
        the id stored already) does what a batch does, `send`, as if it came first."""
        if message.dedup_id is not None:
            return await self._transaction(send, grows=True, inline=True)
        params = (
            message.id,
            message.body,
            message.content_type,
            self.clock.now(),
            message.delay_seconds,
            None if message.dead_letter is None else json.dumps(message.dead_letter.to_dict()),
            None if message.headers is None else dump_headers(message.headers),
            message.group,
            message.queue,
        )
        inserted = self._insert_inline(Q["insert_into_unbounded"], params)
        if inserted == 1:
            return [message.id]
        if inserted == 0:  # it ran and stored nothing: the usual way, inline if it may
            return await self._transaction(send, grows=True, inline=True)

        def send_one(conn: sqlite3.Connection) -> list[str]:
            if conn.execute(Q["insert_into_unbounded"], params).rowcount == 1:
                return [message.id]
            return send(conn)

        return await self._transaction(send_one, grows=True)

    @staticmethod
    def _deduplicate(
        conn: sqlite3.Connection,
        messages: Sequence[OutgoingMessage],
        queues: dict[str, tuple[Any, ...]],
        now: float,
    ) -> list[str]:
        """The id each message is stored under: a dedup id's live claim wins, else the message
        claims it (inside the send's write transaction: other writers wait for it). A
        partitioned queue's claims are scoped to the message's partition (`dedup_key`)."""
        ids = []
        for m in messages:
            queue_id, window, partitions = queues[m.queue][0], queues[m.queue][8], queues[m.queue][10]
            if m.dedup_id is None or window <= 0:
                ids.append(m.id)
                continue
            key = dedup_key(m.group, m.dedup_id, m.id, partitions)
            params = {"queue_id": queue_id, "dedup_id": key, "message_id": m.id, "now": now}
            row = conn.execute(Q["dedup_claim"], params | {"window": window}).fetchone()
            if row is None:
                row = conn.execute(Q["dedup_holder"], params).fetchone()
            ids.append(row[0])
        return ids

    @staticmethod
    def _check_room(
        conn: sqlite3.Connection, queues: dict[str, tuple[Any, ...]], messages: Sequence[OutgoingMessage]
    ) -> None:
        """QueueFull for a bounded queue the messages do not fit in; counted inside the write
        transaction (BEGIN IMMEDIATE: one writer at a time), so racing senders cannot overfill it."""
        if all(row[6] is None and row[7] is None for row in queues.values()):
            return  # no bound to check (most queues): nothing to count
        for name, adding in backlog_added(messages).items():
            row = queues[name]
            if row[6] is None and row[7] is None:
                continue
            held = conn.execute(Q["backlog" if row[7] is not None else "backlog_count"], (row[0],)).fetchone()
            check_room(name, _info(row).settings, (held[0], held[1]), adding)

    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        limit = self._drain_size(limit)
        token = new_token(handed)

        def lease(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            now = self.clock.now()
            rows = conn.execute(Q["lease_pick"], (queue, now, limit)).fetchall()
            if rows:
                _lease_rows(conn, rows, token, now + visibility_timeout)
            return rows

        rows = await self._transaction(lease, lease=True)
        return _leased(queue, rows, token)

    async def lease_ahead(
        self, queue: str, limit: int, visibility_timeout: float, *, hand_first: int
    ) -> list[LeasedMessage]:
        limit = self._drain_size(limit)
        token = new_token(handed=False)
        handing = handed_token(token)

        def lease(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[int]]:
            now = self.clock.now()
            rows = conn.execute(Q["lease_pick"], (queue, now, limit)).fetchall()
            if not rows:
                return rows, []
            # a suspect is not handed (a plain row never is one: no call for it on this thread)
            fresh = [row[0] for row in rows if row[8] is None or _lost(row) == 0]
            handed = fresh[:hand_first] if hand_first > 0 and len(fresh) >= hand_first else []
            deadline = now + visibility_timeout
            if len(handed) == len(rows):  # every row handed (a drain's usual lease): one token
                _lease_rows(conn, rows, handing, deadline)
            elif handed:
                params = {
                    "handed": json.dumps(handed),
                    "handed_token": handing,
                    "token": token,
                    "deadline": deadline,
                    "seqs": json.dumps([row[0] for row in rows]),
                }
                conn.execute(Q["lease_handing"], params)
            else:
                _lease_rows(conn, rows, token, deadline)
            return rows, handed

        rows, handed = await self._transaction(lease, lease=True)
        if rows and len(handed) == len(rows):
            return _leased(queue, rows, handing)
        return _leased(queue, rows, token, handing, set(handed))

    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        if not leases:
            return []

        groups = _token_groups(leases, 0)  # on the event loop: the writer thread limits a drain

        exact = False  # True: which leases were live is read from the statement's rows

        def begin(conn: sqlite3.Connection) -> list[bool]:
            """Usually every lease is live: the count of changed rows says so, with no row
            fetched on this thread (each waits for the GIL). When fewer changed, _SomeStale
            rolls this begin back and it runs again `exact` (as a settle does)."""
            statuses = [False] * len(leases)
            row = conn.execute(Q["queue_by_name"], (queue,)).fetchone()
            if row is None:
                return statuses
            now = self.clock.now()
            for token, rows, items in groups:
                params = {"token": token, "queue_id": row[0], "now": now, **rows}
                if not exact:
                    if conn.execute(_statement("begin_all", rows), params).rowcount != len(items):
                        raise _SomeStale
                    for index in items.values():
                        statuses[index] = True
                    continue
                for (seq,) in conn.execute(Q["begin"], _listed(params, items)):
                    statuses[items[seq]] = True
            return statuses

        try:
            return await self._transaction(begin, lease=True)
        except _SomeStale:
            exact = True
            return await self._transaction(begin, lease=True)

    async def _update_leases(self, statement: str, queue: str, leases: Sequence[Lease], **extra: Any) -> int:
        def update(conn: sqlite3.Connection) -> int:
            row = conn.execute(Q["queue_by_name"], (queue,)).fetchone()
            if row is None:
                return 0
            now = self.clock.now()
            params = [
                {"seq": seq, "token": token, "queue_id": row[0], "now": now} for _, token, seq in leases
            ]
            for item in params:
                item.update(extra)
                if "visibility_timeout" in extra:
                    item["deadline"] = item["now"] + extra["visibility_timeout"]
            return conn.executemany(statement, params).rowcount

        return await self._transaction(update, lease=True)

    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        return await self._update_leases(
            Q["extend_lease"], queue, leases, visibility_timeout=visibility_timeout
        )

    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        released = await self._update_leases(Q["release"], queue, leases)
        if released:
            self._notify(queue)
        return released

    def _drain_size(self, wanted: int) -> int:
        """How many messages one lease or settle may take: all it wants, but on a disk short of
        space only as many as fit in the room the reserve left (storage.py)."""
        if self._reserve is not None and self._reserve.short_of_space():
            return min(wanted, SHORT_OF_SPACE_MESSAGES)
        return wanted

    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        size = self._drain_size(len(outcomes))
        if size == len(outcomes):
            return await self._settle_at_once(queue, outcomes)
        statuses: list[bool] = []
        for part in _in_parts(outcomes, size):  # in order: the statuses line up with the outcomes
            statuses += await self._settle_at_once(queue, part)
        return statuses

    async def _settle_at_once(self, queue: str, outcomes: Outcomes) -> list[bool]:
        # The leases are grouped by token here, on the event loop: the writer thread is what
        # limits a drain, so it only runs the statements.
        statuses = [False] * len(outcomes)
        ack_groups = _token_groups(outcomes.acks, 0)
        retry_groups: dict[float, list[tuple[Lease, int]]] = {}
        for index, (lease, delay) in enumerate(outcomes.retries, len(outcomes.acks)):
            retry_groups.setdefault(delay, []).append((lease, index))
        retry_token_groups = [
            (delay, _token_groups([lease for lease, _ in items], items[0][1], [i for _, i in items]))
            for delay, items in retry_groups.items()
        ]
        dead_start = len(outcomes.acks) + len(outcomes.retries)
        moves = outcomes.dead_letters
        dead_groups = _token_groups([move.lease for move in moves], dead_start)
        dead_letter_queues = {move.queue for move in moves if move.queue is not None}
        records = [json.dumps(move.record.to_dict()) for move in moves]

        exact = False  # True: every ack and retry counts its live leases first (see apply)

        def settle(conn: sqlite3.Connection) -> bool:
            """Apply the outcomes; True when a group's head went (its next is deliverable)."""
            statuses[:] = [False] * len(outcomes)  # a settle run again starts afresh
            row = conn.execute(Q["settle_queue"], (queue,)).fetchone()
            if row is None:
                raise QueueNotFound(queue)
            queue_id, queue_grouped = row
            dlq_ids = {name: self._queue_row(conn, name)[0] for name in dead_letter_queues}
            now = self.clock.now()
            freed = False

            def apply(name: str, groups: _TokenGroups, frees: bool, **extra: Any) -> None:
                """Run statement `name` once per token and mark the items it took. Usually every
                lease is live: the statement's count of changed rows says so, and no statement
                reads them first. When it took fewer (some leases were stale: rare),
                _SomeStale rolls this settle back and it runs again `exact`: which leases are
                live is read first in one row (`settle_live`), then which ones when not all.
                Never from the statement's rows one by one: each row fetched on this thread
                waits for the GIL while the event loop runs Python (handlers, the next batches).
                An ack on a queue holding grouped messages is exact too: whether a group's head
                went is read in the same row."""
                nonlocal freed
                for token, rows, items in groups:
                    params = {"token": token, "queue_id": queue_id, "now": now, **rows} | extra
                    if not exact and not (frees and queue_grouped):
                        if conn.execute(_statement(name, rows), params).rowcount != len(items):
                            raise _SomeStale
                        for index in items.values():
                            statuses[index] = True
                        continue
                    params = _listed(params, items)
                    live, grouped = conn.execute(Q["settle_live"], params).fetchone()
                    if live == len(items):
                        for index in items.values():
                            statuses[index] = True
                    elif live:  # some leases were stale: which (rare)
                        for (seq,) in conn.execute(Q["settle_live_seqs"], params):
                            statuses[items[seq]] = True
                    if live:
                        freed = freed or (frees and bool(grouped))
                        conn.execute(Q[name], params)

            apply("ack", ack_groups, frees=True)
            for delay, groups in retry_token_groups:
                apply("retry", groups, frees=False, delay=delay)
            copies = []
            for token, rows, items in dead_groups:  # dead letters are rare: their rows are kept
                params = _listed({"token": token, "queue_id": queue_id, "now": now, **rows}, items)
                taken = conn.execute(Q["take_dead"], params).fetchall()
                for seq, body, content_type, headers, group in taken:
                    index = items[seq]
                    statuses[index] = True
                    freed = freed or group is not None
                    move = moves[index - dead_start]
                    if move.queue is not None:
                        dlq_id, record = dlq_ids[move.queue], records[index - dead_start]
                        copy_headers = with_dead_letter(headers, move.record)
                        copies.append(
                            (move.new_id, dlq_id, body, content_type, now, now, record, copy_headers, group)
                        )
            if copies:
                conn.executemany(Q["insert_message"], copies)
            return freed

        try:
            freed = await self._transaction(settle)
        except _SomeStale:
            exact = True
            freed = await self._transaction(settle)
        woken = {
            move.queue for move, live in zip(moves, statuses[dead_start:], strict=True) if live and move.queue
        }
        if freed or any(statuses[len(outcomes.acks) : dead_start]):
            woken.add(queue)
        if woken:
            self._notify(*woken)
        return statuses

    async def stats(self, queue: str) -> QueueStats:
        def stats(conn: sqlite3.Connection) -> QueueStats:
            row = self._queue_row(conn, queue)
            now = self.clock.now()
            ready, delayed, in_flight, oldest, size = conn.execute(
                Q["stats"], {"now": now, "queue_id": row[0]}
            ).fetchone()
            age = 0.0 if oldest is None else max(0.0, now - oldest)
            return QueueStats(queue, ready, delayed, in_flight, age, size, bool(row[4]))

        return await self._scan(stats)

    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        def peek(conn: sqlite3.Connection) -> list[StoredMessage]:
            row = self._queue_row(conn, queue)
            now = self.clock.now()
            content_type: ContentType
            result = []
            for r in conn.execute(Q["peek"], (row[0], limit)).fetchall():
                content_type = r[2]
                result.append(
                    StoredMessage(
                        id=r[0],
                        queue=queue,
                        body=r[1],
                        content_type=content_type,
                        timestamp=r[3],
                        attempts=r[4],
                        visible_at=r[5],
                        leased=r[6] is not None and r[5] > now,
                        dead_letter=_dead_letter(r[7]),
                        headers=load_headers(r[8]),
                        group=r[9],
                    )
                )
            return result

        return await self._scan(peek)

    def _id_bound(self, cutoff: float) -> str:
        """An id above that of every message sent before `cutoff` (the sweep's walk of the id
        index ends there): ids start with their making's time in milliseconds as 12 hex digits,
        read from the system clock before the send's `now`. Any other clock (a FakeClock) is
        not that clock: then every id."""
        if type(self.clock) is not SystemClock:
            return "g"
        return f"{math.floor(cutoff * 1000) + 1:012x}"

    async def purge(self, queue: str) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(Q["delete_queue_messages"], (self._queue_row(conn, queue)[0],)).rowcount

        return await self._transaction(purge)

    async def delete_message(self, queue: str, message_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> tuple[bool, bool]:
            """(deleted, it was grouped: its group's next may be deliverable now)."""
            params = {"id": message_id, "queue_id": self._queue_row(conn, queue)[0], "now": self.clock.now()}
            row = conn.execute(Q["delete_message"], params).fetchone()
            if row is not None:
                return True, row[1] is not None
            # not deleted: in the same transaction, a row still there is under a live lease
            if conn.execute(Q["message_leased"], params).fetchone() is not None:
                raise MessageLeased(queue, message_id)
            return False, False

        deleted, grouped = await self._transaction(delete)
        if grouped:
            self._notify(queue)  # a deleted group head frees the group: wake its waiters
        return deleted

    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        def move(conn: sqlite3.Connection) -> int:
            params = {
                "source": self._queue_row(conn, source)[0],
                "destination": self._queue_row(conn, destination)[0],
                "now": self.clock.now(),
                "limit": -1 if limit is None else limit,
            }
            return conn.execute(Q["move"], params).rowcount

        moved = await self._transaction(move)
        if moved:
            self._notify(destination)
        return moved

    async def sweep(self) -> int:
        def sweep(conn: sqlite3.Connection) -> int:
            now = self.clock.now()
            (retention,) = conn.execute(Q["shortest_retention"]).fetchone()
            removed = 0
            if retention is not None:
                params = {"now": now, "id_bound": self._id_bound(now - retention)}
                removed = conn.execute(Q["sweep"], params).rowcount
            conn.execute(Q["sweep_dedup"], (now,))
            return removed

        return await self._transaction(sweep)


def _lease_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], token: str, deadline: float) -> None:
    """Lease the rows lease_pick read, all under `token`, in the same write transaction."""
    fresh = all(row[8] is None for row in rows)  # plain rows: no token, so no counts to work out
    rows_params = _rows([row[0] for row in rows])
    statement = _statement("lease_fresh" if fresh else "lease", rows_params)
    conn.execute(statement, {"token": token, "deadline": deadline, **rows_params})


class _SomeStale(Exception):
    """A settle's or begin's statement took fewer rows than it named: its transaction is rolled
    back and it runs again, finding out which leases were live (see `_settle_at_once`)."""


def _leased(
    queue: str, rows: list[tuple[Any, ...]], token: str, handing: str = "", handed: set[int] | None = None
) -> list[LeasedMessage]:
    """A lease's messages, from lease_pick's rows (in their order): under `token`, or `handing`
    for the rows in `handed`. Runs per message: make_row_lease_id's format is inlined."""
    handed = handed or set()
    return [
        LeasedMessage(
            id_,
            queue,
            body,
            kind,
            sent,
            attempts,
            f"{id_}.{handing if seq in handed else token}.{seq}",
            None if redelivery is None else _dead_letter(json.loads(redelivery)[1]),
            0 if redelivery is None else json.loads(redelivery)[0],
            None if headers is None else load_headers(headers),
            group,
        )
        for seq, id_, body, kind, sent, attempts, headers, group, redelivery in rows
    ]


def _lost(row: tuple[Any, ...]) -> int:
    """A lease_pick row's deliveries in a row without an outcome (see lease_pick)."""
    return 0 if row[8] is None else int(json.loads(row[8])[0])


# (token, its rows as statement parameters (`_rows`), rowid -> the item's index in the settle)
_TokenGroups = list[tuple[str, dict[str, Any], dict[int, int]]]


def _token_groups(leases: Sequence[Lease], start: int, indexes: Sequence[int] | None = None) -> _TokenGroups:
    """Leases grouped for the settle statements, one group per token (a batch's leases usually
    share one). Items are numbered from `start`, or by `indexes` when given. A row named twice
    under one token counts once, for its first item."""
    by_token: dict[str, dict[int, int]] = {}
    for position, (_, token, seq) in enumerate(leases):
        index = start + position if indexes is None else indexes[position]
        by_token.setdefault(token, {}).setdefault(seq, index)
    return [(token, _rows(items), items) for token, items in by_token.items()]


def _rows(seqs: Collection[int]) -> dict[str, Any]:
    """The parameters naming the rows `seqs` (distinct rowids): :lo and :hi when they are every
    rowid in that range (`_by_range`; the statement from `_statement`), else :seqs."""
    span = _by_range(seqs)
    if span is None:
        return {"seqs": json.dumps(list(seqs))}
    return {"lo": span[0], "hi": span[1]}


def _statement(name: str, rows: dict[str, Any]) -> str:
    """Statement `name` for the rows `rows` names (`_rows`)."""
    return Q[name] if "seqs" in rows else RANGED[name]


def _listed(params: dict[str, Any], seqs: Collection[int]) -> dict[str, Any]:
    """`params` with its rows named as a JSON array (:seqs), for the statements that take only
    that (rare: the reads of which leases are live, dead letters, begins found stale)."""
    return params if "seqs" in params else params | {"seqs": json.dumps(list(seqs))}


def _in_parts(outcomes: Outcomes, size: int) -> list[Outcomes]:
    """`outcomes` as parts of at most `size` items, in the order acks, retries, dead letters."""
    acks, retries, dead = outcomes.acks, outcomes.retries, outcomes.dead_letters
    return [
        *(Outcomes(acks=acks[i : i + size]) for i in range(0, len(acks), size)),
        *(Outcomes(retries=retries[i : i + size]) for i in range(0, len(retries), size)),
        *(Outcomes(dead_letters=dead[i : i + size]) for i in range(0, len(dead), size)),
    ]


def _settle_futures(
    group: list[_Pending], outcomes: list[tuple[bool, Any]], loop: asyncio.AbstractEventLoop
) -> None:
    """On `loop`: give the callers from that loop the outcomes of their transactions."""
    for (_, future, _, future_loop, _), (ok, value) in zip(group, outcomes, strict=True):
        if future_loop is not loop or future.done():
            continue  # its caller gave up waiting; the write stands
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
