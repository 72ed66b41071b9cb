"""The SQLite file's storage: sqlite3's storage errors as conveyor's, and the reserve that keeps a
full disk drainable (docs/sqlite.md, "A full disk").

In WAL mode every commit, a delete too, appends pages to the WAL file: on a full disk nothing
commits, acks included. So once the disk runs low, conveyor keeps a reserve file beside the
database (`<path>-reserve`). A lease, settle or delete that fails for want of space gives the
reserve back and runs again, and a checkpoint then empties the WAL; writes that grow the database
(sends, new queues) never use it: while the disk is low and the reserve is gone, they fail with
StorageFull before they write, and go again once the disk has room for the reserve twice over
or the file holds a reserve's worth of free pages (the room of messages drained meanwhile, which
sends fill without growing the file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time

from conveyor.errors import BackendUnavailable, CannotConnect, StorageFull, StorageUnusable

RESERVE_SUFFIX = "-reserve"
# The reserve is at most this big, and at most this share of its file system (a small disk keeps
# most of its room for messages).
MAX_RESERVE_BYTES = 16 * 1024 * 1024
RESERVE_DISK_SHARE = 1 / 8
# The reserve is made once the disk's free space falls below this many reserves: a roomy disk
# holds no reserve at all.
LOW_SPACE_RESERVES = 16
# After a full disk, writes that grow the database go again once this many reserves are free
# (room for the reserve, and as much again for the writes).
SPACE_BACK_RESERVES = 2
# How long a look that found the disk roomy stands before the next.
ROOMY_CHECK_SECONDS = 1.0
# While the disk is short of space (low, its reserve given back), a lease or a settle takes at most
# this many messages per transaction, so that each fits in the room the reserve left.
SHORT_OF_SPACE_MESSAGES = 10
# The WAL is checkpointed once it holds this share of the reserve (SQLite's `wal_autocheckpoint`,
# within the bounds below), so a checkpoint on a full disk fits in the reserve it was given back.
WAL_SHARE_OF_RESERVE = 1 / 4
MIN_CHECKPOINT_PAGES = 8
MAX_CHECKPOINT_PAGES = 1_000  # SQLite's default

_FULL = {sqlite3.SQLITE_FULL}
_UNUSABLE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_CANNOT_OPEN = {sqlite3.SQLITE_CANTOPEN}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM,
}


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_full(exc: BaseException) -> bool:
    """True for a write that failed because the disk is full (sqlite3's error or ours)."""
    return isinstance(exc, StorageFull) or _primary_code(exc) in _FULL


def is_busy(exc: BaseException) -> bool:
    """True for a statement refused because another connection holds the lock it needs."""
    return _primary_code(exc) in _BUSY


def _unreachable_folder(path: str) -> str | None:
    """Why the folder of `path` cannot hold a database (missing, not a folder, not writable), if so."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        return f"its folder {folder} does not exist"
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    if read_only or not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable" + (" (a read-only file system)" if read_only else "")
    return None


def storage_error(exc: sqlite3.Error, path: str) -> Exception:
    """conveyor's error for a storage failure of the database at `path`; any other sqlite3 error
    (a statement of conveyor's that is wrong) is returned as it is."""
    code = _primary_code(exc)
    if code in _FULL:
        return StorageFull(
            f"the disk holding {path} is full ({exc}): nothing was written. Free space on it, or "
            "drain the queue: consumers can still ack and delete (docs/sqlite.md, 'A full disk')"
        )
    if code in _UNUSABLE:
        return StorageUnusable(
            f"{path} is not a usable SQLite database ({exc}); conveyor changed nothing. "
            "Restore it from a backup, or point the URL at another file"
        )
    if code in _CANNOT_OPEN:
        unreachable = _unreachable_folder(path)
        if unreachable is not None:
            return CannotConnect(f"cannot open the SQLite database {path}: {unreachable}")
        return StorageUnusable(
            f"cannot open the SQLite database {path} ({exc}): is it a directory, or is its folder "
            "missing or not writable?"
        )
    if code in _UNAVAILABLE:
        return BackendUnavailable(f"the SQLite database {path} cannot be written now ({exc})")
    return exc


def checkpoint_pages(reserve_bytes: int, page_size: int) -> int:
    """`wal_autocheckpoint` for a reserve of `reserve_bytes`."""
    pages = int(reserve_bytes * WAL_SHARE_OF_RESERVE) // page_size
    return max(MIN_CHECKPOINT_PAGES, min(MAX_CHECKPOINT_PAGES, pages))


class Reserve:
    """The reserve file beside one database (see the module's docstring)."""

    def __init__(self, database: str) -> None:
        self.path = database + RESERVE_SUFFIX
        self.folder = os.path.dirname(os.path.abspath(database))
        disk = os.statvfs(self.folder)
        share = int(disk.f_frsize * disk.f_blocks * RESERVE_DISK_SHARE)
        self.size = min(MAX_RESERVE_BYTES, share) // 4096 * 4096
        self._roomy_until = 0.0

    def free_bytes(self) -> int:
        disk = os.statvfs(self.folder)
        return disk.f_bavail * disk.f_frsize

    def present(self) -> bool:
        try:
            return os.stat(self.path).st_size >= self.size
        except FileNotFoundError:
            return False

    def _roomy(self) -> tuple[bool, int]:
        """Is the disk roomy (no reserve needed), and its free bytes (0 when the answer is cached)."""
        now = time.monotonic()
        if now < self._roomy_until:
            return True, 0
        free = self.free_bytes()
        if free >= LOW_SPACE_RESERVES * self.size:
            self._roomy_until = now + ROOMY_CHECK_SECONDS
            return True, free
        return False, free

    def room_to_grow(self) -> bool:
        """May a write that grows the database go? Yes on a roomy disk, or on a low one whose
        reserve is in place (made now when the disk has room for it twice over)."""
        roomy, free = self._roomy()
        if roomy or self.present():
            return True
        return free >= SPACE_BACK_RESERVES * self.size and self._make()

    def short_of_space(self) -> bool:
        """Is the disk low with its reserve given back (drains then go in small transactions)?"""
        try:
            roomy, _ = self._roomy()
            return not roomy and not self.present()
        except OSError:  # the file system would not say
            return False

    def _make(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, self.size)
            finally:
                os.close(descriptor)
        except OSError:  # no room after all (another writer was faster): no reserve yet
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return False
        return True

    def give_back(self) -> bool:
        """Delete the reserve so a drain can use its room; True if there was one."""
        self._roomy_until = 0.0
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True
