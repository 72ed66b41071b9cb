"""The processes of one run: started by the harness, signalled and stopped by their PID, their
starts, ends and the harness's kills written to the events ledger; and a supervisor that starts
a worker again when it dies, as systemd or Kubernetes would.

Every child dies with the harness (PR_SET_PDEATHSIG), so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reliability.ledger import LedgerFile, now
from reliability.servers import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
# How long a child asked to stop with SIGTERM may take before it gets SIGKILL.
STOP_TIMEOUT_SECONDS = 30.0
# How often the supervisor looks for dead workers, and how long it waits before starting one again.
SUPERVISE_INTERVAL_SECONDS = 0.1
RESTART_DELAY_SECONDS = 0.2
# A supervisor gives up on a worker that died this many times in one run (a crash loop).
MAX_RESTARTS = 40


def worker_argv(url: str, shutdown_grace: float = 20) -> list[str]:
    """The command line of a worker process: `conveyor worker` running reliability's worker app."""
    return [
        sys.executable, "-m", "conveyor", "--url", url, "worker", "reliability.roles.worker_app:app",
        "--shutdown-grace", str(shutdown_grace), "--log-level", "info",
    ]  # fmt: skip


@dataclass
class Child:
    role: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    log: Path
    #: set when the harness asked it to stop (SIGTERM): an exit 0 after that is clean
    stop_requested: bool = False
    ended: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Processes:
    """Every child of one run."""

    events: LedgerFile
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, role: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        log = self.log_dir / f"{role}-{len(self.children)}.log"
        with log.open("ab") as output:
            popen = subprocess.Popen(
                list(argv),
                cwd=self.log_dir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        child = Child(role, list(argv), full_env, popen, log)
        self.children.append(child)
        self.events.write({"kind": "start", "at": now(), "pid": child.pid, "role": role})
        return child

    def python(self, role: str, module: str, *args: str, env: Mapping[str, str] | None = None) -> Child:
        return self.start(role, [sys.executable, "-m", module, *args], env)

    def restart(self, child: Child) -> Child:
        return self.start(child.role, child.argv, child.env)

    def kill(self, child: Child, signum: int = signal.SIGKILL) -> None:
        """Inflict `signum` on `child` as a fault (recorded before it is sent)."""
        if not child.alive():
            return
        self.events.write(
            {
                "kind": "kill",
                "at": now(),
                "pid": child.pid,
                "role": child.role,
                "detail": signal.Signals(signum).name,
            }
        )
        if signum == signal.SIGTERM:
            child.stop_requested = True
        os.kill(child.pid, signum)

    def reap(self, child: Child) -> bool:
        """Record `child`'s end if it has ended and was not recorded yet; True if it is ended."""
        code = child.popen.poll()
        if code is None:
            return False
        if not child.ended:
            child.ended = True
            self.events.write(
                {
                    "kind": "exit",
                    "at": now(),
                    "pid": child.pid,
                    "role": child.role,
                    "code": code,
                    # conveyor exits 0 only after a graceful stop: its outcomes were settled
                    "clean": code == 0,
                }
            )
        return True

    async def wait(self, child: Child, timeout: float) -> int | None:
        """Its exit code once it ends within `timeout` seconds, else None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.reap(child):
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return child.popen.returncode

    async def stop(self, child: Child, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Ask `child` to stop (SIGTERM, not a fault); SIGKILL it if it outlasts `timeout`.
        Its exit code, or None when it had ended before it was asked."""
        if self.reap(child):
            return None
        child.stop_requested = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        code = await self.wait(child, timeout)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            code = await self.wait(child, timeout)
        return -9 if code is None else code

    async def close(self) -> None:
        """Stop every child still running, each by its PID."""
        await asyncio.gather(*(self.stop(child) for child in self.children if not child.ended))
        for child in self.children:
            self.reap(child)

    def tail(self, child: Child, lines: int = 5) -> str:
        text = child.log.read_text(errors="replace") if child.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Keeps one worker running: starts it again whenever it ends, until `stop()`."""

    def __init__(self, processes: Processes, child: Child, max_restarts: int = MAX_RESTARTS) -> None:
        self.processes = processes
        self.child = child
        self.max_restarts = max_restarts
        self.restarts = 0
        self.gave_up = False
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_SECONDS)
            if not self.processes.reap(self.child):
                continue
            if self.restarts >= self.max_restarts:
                self.gave_up = True
                return
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            self.restarts += 1
            self.child = self.processes.restart(self.child)

    async def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Stop supervising and stop the worker; its exit code (None: it had ended already)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return await self.processes.stop(self.child, timeout)
