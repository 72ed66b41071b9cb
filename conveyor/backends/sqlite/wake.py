"""Cross-process wake-ups for SQLite: a wake file beside the database, watched with Linux inotify.

After every commit that makes messages ready (a send, a retry, a release, a move, a resume) the
committing process writes one byte to `<database>-wake` (no fsync: it carries no data). A
consumer waiting in another process watches that name with inotify and looks again at once,
instead of at its next poll of the WAL file. The write follows the commit, so the look finds it;
the WAL file itself is written before a commit is visible (and synced), which would make the
waiter look too early. The poll stays as the fallback (other systems, a full inotify table, a
network filesystem that reports nothing, a writer that is not conveyor).

The watch is on the directory, filtered by name, so it holds whether or not the file exists yet.
The event loop reads the inotify descriptor only while a consumer waits; the kernel merges the
identical events queued meanwhile into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import struct
import sys

log = logging.getLogger("conveyor.sqlite")

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
# What one read takes from the descriptor; more events wait for the next read.
_READ_BYTES = 64 * 1024


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def wake_path(database: str) -> str:
    return f"{database}-wake"


class WakeFile:
    """The writing side: `touch()` after a commit that makes messages ready."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._fd: int | None = None
        self._broken = False

    def touch(self) -> None:
        if self._broken:
            return
        try:
            if self._fd is None:
                # the database's permissions, so every process that may write it may wake
                mode = os.stat(self._database).st_mode & 0o666
                self._fd = os.open(wake_path(self._database), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode)
                with contextlib.suppress(OSError):  # past the umask, as SQLite does for its -wal
                    os.fchmod(self._fd, mode)
            os.pwrite(self._fd, b"\0", 0)
        except OSError as exc:
            # consumers elsewhere still see the commit at their next poll
            log.debug("no wake file beside %s (%s): other processes poll", self._database, exc)
            self._broken = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WakeWatch:
    """Futures on one event loop that resolve when some process touches `database`'s wake file."""

    def __init__(self, fd: int, wake_name: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._wake_name = wake_name
        self._loop = loop
        self._futures: list[asyncio.Future[None]] = []
        self._reading = False

    @classmethod
    def open(cls, database: str, loop: asyncio.AbstractEventLoop) -> WakeWatch | None:
        """A watch, or None where inotify is not available (the caller keeps polling)."""
        if _libc is None or database == ":memory:":
            return None
        directory, name = os.path.split(os.path.abspath(database))
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.debug("no inotify for %s (errno %d): waiting consumers poll", database, ctypes.get_errno())
            return None
        if _libc.inotify_add_watch(fd, os.fsencode(directory), _IN_MODIFY) < 0:
            errno = ctypes.get_errno()
            log.debug("no inotify watch on %s (errno %d): waiting consumers poll", directory, errno)
            os.close(fd)
            return None
        return cls(fd, os.fsencode(os.path.basename(wake_path(name))), loop)

    def on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this watch serves waits on `loop` (it reads on one loop only)."""
        return loop is self._loop and not loop.is_closed()

    def next_write(self) -> asyncio.Future[None]:
        """A future that resolves at the next touch of the wake file after this call."""
        future: asyncio.Future[None] = self._loop.create_future()
        if not self._reading:
            self._drain()  # writes from before this call are not news
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True
        self._futures.append(future)
        return future

    def _on_readable(self) -> None:
        if not self._drain():
            return
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _drain(self) -> bool:
        """Read every queued event; whether one was a touch of the wake file (or events were lost)."""
        written = False
        while True:
            try:
                data = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                return written
            except OSError:
                return True  # a broken descriptor: wake the waiters, the poll carries on
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + length].rstrip(b"\0")
                offset = start + length
                if mask & _IN_Q_OVERFLOW or name == self._wake_name:
                    written = True

    def close_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close from `loop`: at once on the watch's own loop, else handed to it (or done here
        when that loop no longer runs)."""
        if loop is self._loop or not self._loop.is_running():
            self.close()
        else:
            self._loop.call_soon_threadsafe(self.close)

    def close(self) -> None:
        """Stop watching; waiting futures are woken (their consumers look again, then poll)."""
        for future in self._futures:
            if not future.done():
                future.set_result(None)
        self._futures = []
        if self._fd < 0:
            return
        if self._reading and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._reading = False
        os.close(self._fd)
        self._fd = -1
