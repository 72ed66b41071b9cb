"""postgresql://: the PostgreSQL engine (backend.py; its statements in queries.sql)."""

from conveyor.backends.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
