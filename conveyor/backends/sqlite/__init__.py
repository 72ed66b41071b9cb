"""sqlite:///path.db: the embedded engine (backend.py; its statements in queries.sql)."""

from conveyor.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
