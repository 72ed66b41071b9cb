"""The first connection to PostgreSQL, made before the pool opens: an error that waiting will not
fix (an unknown host, a refused port, a missing database, a rejected role or password) is
CannotConnect at once, naming the cause in one line; one that can heal (the server starting up or
out of connections, a timeout) is retried with backoff until the deadline."""

from __future__ import annotations

import asyncio
import re
import time

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conveyor.backends.urls import redact
from conveyor.errors import BackendUnavailable, CannotConnect

# SQLSTATEs a first connection may meet and that pass by themselves: the server is starting or
# shutting down, or has no connection slot (or memory, disk) free right now.
HEALING_STATES = frozenset({"57P01", "57P02", "57P03", "53000", "53100", "53200", "53300", "53400"})
# libpq's connect_timeout is whole seconds, at least 2.
MIN_CONNECT_TIMEOUT_SECONDS = 2
FIRST_RETRY_SECONDS = 0.05
MAX_RETRY_SECONDS = 1.0


def cause(exc: psycopg.Error) -> str:
    """libpq's message on one line: 'database "x" does not exist', 'Connection refused (is the
    server running …?)', "failed to resolve host 'db': …"."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = re.sub(r"^(FATAL|ERROR):\s+", "", lines[0].rsplit("failed: ", 1)[-1])
    hint = " ".join(lines[1:])
    return f"{text} ({hint[0].lower() + hint[1:]})" if hint else text


def may_heal(exc: psycopg.Error) -> bool:
    if exc.sqlstate is not None:
        return exc.sqlstate in HEALING_STATES
    return "timeout expired" in str(exc)  # no answer in time: a slow network, a busy server


async def check_connects(conninfo: str, url: str, timeout: float) -> None:
    """Connect once and close; CannotConnect at once, or BackendUnavailable after `timeout` seconds
    of errors that could have healed."""
    if "connect_timeout" not in conninfo_to_dict(conninfo):  # the URL's own wins
        conninfo = make_conninfo(conninfo, connect_timeout=max(MIN_CONNECT_TIMEOUT_SECONDS, round(timeout)))
    deadline = time.monotonic() + timeout
    delay = FIRST_RETRY_SECONDS
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            if not may_heal(exc):
                raise CannotConnect(f"cannot connect to PostgreSQL at {redact(url)}: {cause(exc)}") from None
            if time.monotonic() + delay > deadline:
                raise BackendUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {cause(exc)}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        else:
            await conn.close()
            return
