"""Engine servers of the harness's own, for the crash and restart scenarios: a temporary
PostgreSQL cluster, a redis-server with an fsync-always AOF and a JetStream nats-server, each
on a spare loopback port, in a temporary directory, started and stopped by PID. The machine's
own services are never touched.

`crash()` is SIGKILL to the server and (PostgreSQL) its backends: no shutdown, no checkpoint, as
if the machine lost the process; `start()` brings it back on the same port with the same data.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil

from conveyor.processes import terminate

# How long a server may take to accept connections after it starts.
STARTUP_TIMEOUT_SECONDS = 30.0
# How long a killed server's processes may take to be gone.
EXIT_TIMEOUT_SECONDS = 10.0
POSTGRES_BIN = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:
    """In a child before exec: it gets SIGKILL if the harness dies without stopping it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class OwnServer:
    """One server process of the harness's own on `port`, with its data in `directory`."""

    name = "server"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-off set-up before the first start (PostgreSQL's initdb)."""

    def discard(self) -> None:
        """Remove what it keeps outside `directory`, once it is stopped for good."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        log = (self.directory / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec()
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {self.directory}/{self.name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not accept connections within {STARTUP_TIMEOUT_SECONDS} s"
                )
            time.sleep(0.1)

    def ready(self) -> bool:
        return port_open(self.port)

    def preexec(self) -> Callable[[], None]:
        """What the child runs before exec."""
        return die_with_parent

    def crash(self) -> None:
        """SIGKILL the server and every process it started, and wait until they are gone."""
        if self.process is None:
            return
        try:
            family = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                os.kill(member.pid, signal.SIGKILL)
        self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        psutil.wait_procs(family, timeout=EXIT_TIMEOUT_SECONDS)
        self.process = None

    def stop(self) -> None:
        """A clean stop (SIGTERM, then SIGKILL past the timeout)."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, EXIT_TIMEOUT_SECONDS)


class OwnPostgres(OwnServer):
    """A temporary cluster: initdb (trust auth, loopback only), `postgres -D ... -p PORT`, fsync on.

    PostgreSQL refuses to run as root: when we are root it runs as the `postgres` account, its
    cluster in a directory of its own (a run directory under a private temporary directory may
    not be reachable by that account), removed by `discard()`."""

    name = "postgres"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.account: tuple[int, int] | None = None
        self.cluster = directory
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self.account = (account.pw_uid, account.pw_gid)
            self.cluster = Path(tempfile.mkdtemp(prefix="conveyor-reliability-pg-"))
            os.chown(self.cluster, *self.account)

    @staticmethod
    def binaries() -> Path | None:
        versions = sorted(POSTGRES_BIN.glob("*/bin/initdb")) if POSTGRES_BIN.exists() else []
        return versions[-1].parent if versions else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _binary(self, name: str) -> str:
        bin_dir = self.binaries()
        if bin_dir is None:
            raise RuntimeError(f"no PostgreSQL binaries under {POSTGRES_BIN}")
        return str(bin_dir / name)

    def prepare(self) -> None:
        subprocess.run(
            [self._binary("initdb"), "-D", str(self.cluster / "data"), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
            preexec_fn=self._become(die=False),
        )

    def command(self) -> list[str]:
        return [
            self._binary("postgres"),
            "-D", str(self.cluster / "data"),
            "-p", str(self.port),
            "-k", str(self.cluster),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=100",
        ]  # fmt: skip

    def preexec(self) -> Callable[[], None]:
        return self._become(die=True)

    def _become(self, *, die: bool) -> Callable[[], None]:
        account = self.account

        def become() -> None:
            if account is not None:
                os.setgid(account[1])
                os.setuid(account[0])
            if die:  # after setuid, which clears the parent-death signal
                die_with_parent()

        return become

    def ready(self) -> bool:
        probe = subprocess.run(
            [self._binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def discard(self) -> None:
        if self.cluster != self.directory:
            shutil.rmtree(self.cluster, ignore_errors=True)


class OwnRedis(OwnServer):
    """redis-server with an AOF fsynced on every write: the durable setting of docs/redis.md."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
        ]  # fmt: skip


class OwnNats(OwnServer):
    """nats-server with JetStream, its store in the run's directory."""

    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "nats-server",
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.directory / "js"),
        ]


ServerT = TypeVar("ServerT", bound=OwnServer)


@contextlib.contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    """`server` prepared and started; stopped by its PID and its data removed on the way out."""
    try:
        server.prepare()
        server.start()
        yield server
    finally:
        server.stop()
        server.discard()


def available(kind: str) -> str | None:
    """Why an own server of `kind` cannot be started here, or None."""
    if kind == "postgres":
        return None if OwnPostgres.binaries() is not None else f"no PostgreSQL binaries under {POSTGRES_BIN}"
    binary = {"redis": "redis-server", "nats": "nats-server"}.get(kind)
    if binary is None:
        return f"no own server for {kind}"
    return None if shutil.which(binary) else f"{binary} is not installed"
