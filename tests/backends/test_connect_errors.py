"""A first connection that cannot succeed fails at once with CannotConnect naming the cause in one
line, on every engine, against the real services: an unknown host, a closed port, a missing
database, rejected credentials, an unwritable SQLite folder. No retries hide the cause."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.bench.nats_servers import free_ports
from tests.support.engines import check_nats, check_postgres, check_redis
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, REDIS_HOST, REDIS_PORT
from tests.support.tmpfs import small_tmpfs

UNKNOWN_HOST = "no-such-host.invalid"  # .invalid never resolves (RFC 2606)
# a bound on waiting for the test's own nats-server
SERVER_START_SECONDS = 20


def closed_port() -> int:
    [port] = free_ports(1)  # free: nothing listens
    return port


async def cannot_connect(url: str) -> str:
    """The CannotConnect message a first use of `url` raises (the app is closed afterwards)."""
    app = conveyor.App(url)
    try:
        with pytest.raises(conveyor.CannotConnect) as raised:
            await app.list_queues()
    finally:
        await app.close()
    message = str(raised.value)
    assert "\n" not in message  # one line
    assert "hunter2" not in message  # never the password
    assert raised.value.code == "cannot_connect"
    assert isinstance(raised.value, conveyor.BackendUnavailable)
    return message


POSTGRES_CASES: list[tuple[str, Callable[[], str], str]] = [
    ("unknown host", lambda: f"postgresql://u:hunter2@{UNKNOWN_HOST}/test", "failed to resolve host"),
    ("closed port", lambda: f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/test", "Connection refused"),
    (
        "missing database",
        lambda: f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/conveyor_no_such_database",
        'database "conveyor_no_such_database" does not exist',
    ),
    (
        "rejected role",
        lambda: f"postgresql://conveyor_no_such_role:hunter2@{POSTGRES_HOST}:{POSTGRES_PORT}/test",
        'role "conveyor_no_such_role" does not exist',
    ),
]


@pytest.mark.parametrize(("case", "url", "cause"), POSTGRES_CASES, ids=[c[0] for c in POSTGRES_CASES])
async def test_postgres_first_connect_fails_fast_naming_the_cause(
    case: str, url: Callable[[], str], cause: str
) -> None:
    check_postgres()
    # a pool timeout of a minute: only a fast failure ends before the test's own timeout
    message = await cannot_connect(url() + "?pool_timeout=60")
    assert message.startswith("cannot connect to PostgreSQL at postgresql://")
    assert cause in message


REDIS_CASES: list[tuple[str, Callable[[], str], str]] = [
    ("unknown host", lambda: f"redis://:hunter2@{UNKNOWN_HOST}:6379/0", "unknown host"),
    ("closed port", lambda: f"redis://:hunter2@127.0.0.1:{closed_port()}/0", "Connection refused"),
    ("missing database", lambda: f"redis://{REDIS_HOST}:{REDIS_PORT}/999", "DB index is out of range"),
    ("rejected password", lambda: f"redis://:hunter2@{REDIS_HOST}:{REDIS_PORT}/0", "AUTH"),
    (
        "rejected user",
        lambda: f"redis://conveyor_no_such_user:hunter2@{REDIS_HOST}:{REDIS_PORT}/0",
        "invalid username-password pair",
    ),
]


@pytest.mark.parametrize(("case", "url", "cause"), REDIS_CASES, ids=[c[0] for c in REDIS_CASES])
async def test_redis_first_connect_fails_fast_naming_the_cause(
    case: str, url: Callable[[], str], cause: str
) -> None:
    check_redis()
    message = await cannot_connect(url())
    assert message.startswith("cannot connect to Redis at ")
    assert cause in message


@pytest.fixture
def nats_with_a_password(tmp_path: Path) -> Iterator[int]:
    """A nats-server of the test's own that wants user `conveyor`, password `right`."""
    if shutil.which("nats-server") is None:
        check_nats()  # skips (or fails under CONVEYOR_REQUIRE_SERVICES=1) with the reason
        pytest.skip("nats-server is not installed")
    port = closed_port()
    command = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "--user", "conveyor", "--pass", "right"]
    log = (tmp_path / "nats.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        import time

        from tests.support.polling import POLL_SECONDS
        from tests.support.services import port_open

        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "nats.log").read_text()
            time.sleep(POLL_SECONDS)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


async def test_nats_first_connect_fails_fast_naming_the_cause(nats_with_a_password: int) -> None:
    check_nats()
    message = await cannot_connect(f"nats://u:hunter2@{UNKNOWN_HOST}:4222")
    assert message.startswith("cannot connect to NATS at ") and "unknown host" in message
    port = closed_port()
    message = await cannot_connect(f"nats://u:hunter2@127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message
    message = await cannot_connect(f"nats://conveyor:hunter2@127.0.0.1:{nats_with_a_password}")
    assert "authorization violation" in message


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system (a tmpfs of the test's own: root can write anywhere else)."""
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
        yield disk


async def test_sqlite_in_a_missing_folder_fails_fast_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "q.db"
    message = await cannot_connect(f"sqlite:///{missing}")
    assert message == f"cannot open the SQLite database {missing}: its folder {missing.parent} does not exist"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    message = await cannot_connect(f"sqlite:///{a_file / 'q.db'}")
    assert message.endswith(f"{a_file} is not a folder")


async def test_sqlite_in_a_read_only_folder_fails_fast_naming_it(read_only_folder: Path) -> None:
    message = await cannot_connect(f"sqlite:///{read_only_folder / 'q.db'}")
    assert message.endswith(f"its folder {read_only_folder} is not writable (a read-only file system)")
