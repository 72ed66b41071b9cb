"""Processes: how conveyor's entry points end (Ctrl-C is exit code 130 after one line) and child
processes that stop with their parent, however the parent ends.

A parent passes its children the read end of a pipe whose write end only it holds (the descriptor
is not inherited by anything else). When the parent exits for any reason, SIGKILL included, the
kernel closes the write end; each child reads end-of-file and stops itself with SIGTERM (its
graceful shutdown), then exits for good after `ORPHAN_GRACE_SECONDS`. This works on every POSIX
system (Linux, macOS, the BSDs), unlike Linux's PR_SET_PDEATHSIG, and needs no polling.

Parent: `Popen([...], **stop_with_me())` (or `asyncio.create_subprocess_exec`).
Child (a conveyor entry point): `watch_parent()` first thing.

A process whose parent is not conveyor's (the demo under `make demo`, which does not pass SIGHUP on
to its recipe) uses `hang_up_with_parent()`: on Linux, PR_SET_PDEATHSIG delivers SIGHUP when the
parent exits; elsewhere it does nothing (a closed terminal still sends SIGHUP to the whole group).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

#: the exit code of a conveyor entry point stopped by Ctrl-C (the shell's 128 + SIGINT)
INTERRUPTED_EXIT_CODE = 130
#: the environment variable naming the pipe descriptor a child watches
PARENT_PIPE_ENV = "CONVEYOR_PARENT_PIPE"
#: how long an orphan's graceful shutdown (after SIGTERM) may take before it exits regardless
ORPHAN_GRACE_SECONDS = 30.0

_lock = threading.Lock()
_read_fd: int | None = None


def _pipe_read_end() -> int:
    """This process's pipe (one for all its children); the write end stays open until it exits."""
    global _read_fd
    with _lock:
        if _read_fd is None:
            _read_fd, _write_fd = os.pipe()  # both non-inheritable: no other child holds the write end
        return _read_fd


def stop_with_me(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `subprocess.Popen` / `asyncio.create_subprocess_exec` that make a
    conveyor child (one that calls `watch_parent`) stop when this process ends. `env` defaults to
    this process's environment."""
    read_fd = _pipe_read_end()
    return {
        "pass_fds": (read_fd,),
        "env": {**(os.environ if env is None else env), PARENT_PIPE_ENV: str(read_fd)},
    }


_PR_SET_PDEATHSIG = 1


def hang_up_with_parent() -> bool:
    """Linux: this process gets SIGHUP when its parent exits (for `make demo`, killed alone).
    Returns whether that could be arranged."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGHUP)
    return True


def watch_parent() -> bool:
    """In a child started with `stop_with_me()`: stop (SIGTERM to itself) when the parent is gone.
    Returns whether there was a parent to watch."""
    value = os.environ.pop(PARENT_PIPE_ENV, None)
    if value is None or not value.isdigit():
        return False
    fd = int(value)
    try:
        os.set_inheritable(fd, False)  # the child's own children watch it, not its parent
    except OSError:
        return False  # not open: nothing to watch
    threading.Thread(target=_watch, args=(fd,), name="conveyor-parent-watch", daemon=True).start()
    return True


def _watch(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):
                break  # end of file: the parent has exited
        except InterruptedError:
            continue
        except OSError:
            break
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(1)  # the graceful shutdown hung: an orphan must not outlive its grace


def terminate(process: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL if it has not exited within `timeout`
    seconds; waits for it either way (no zombie). Nothing happens if it has already exited."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
