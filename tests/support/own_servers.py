"""Engine servers a test starts for itself, for tests that crash or restart one: started and
killed by PID on a spare loopback port (the fault harness's servers, reliability/servers.py).
The machine's own services are never touched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from reliability.servers import OwnPostgres, available, running
from tests.support.services import need


@contextlib.contextmanager
def own_postgres(directory: Path) -> Iterator[OwnPostgres]:
    """A fresh PostgreSQL cluster of the test's own (initdb, trust auth, loopback), removed afterwards."""
    problem = available("postgres")
    need("a PostgreSQL server of the test's own", problem is None, problem or "")
    with running(OwnPostgres(directory)) as server:
        yield server
