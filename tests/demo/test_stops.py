"""The demo's service and worker stop with the demo, however it ends: SIGTERM, SIGHUP and Ctrl-C
stop them in order; SIGKILL leaves them to notice (conveyor/processes.py). A taken port is one
error line before anything is created. Real processes, real signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

# a bound on waiting, never an assertion on speed
TIMEOUT_SECONDS = 60.0
ENTRY_POINTS = {"module": ["-m", "conveyor.demo"], "cli": ["-m", "conveyor", "dev"]}


def start_demo(tmp_path: Path, entry: str) -> subprocess.Popen[str]:
    command = [sys.executable, *ENTRY_POINTS[entry], "--port", "0", "--visits", "50", "--dir", "demo"]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_serving(demo: subprocess.Popen[str]) -> list[psutil.Process]:
    """Read the demo's output until it serves the page; its child processes."""
    assert demo.stdout is not None
    for line in demo.stdout:
        if "Analytics:" in line:
            break
    else:
        raise AssertionError(f"the demo ended before serving (exit {demo.wait()}): {demo.stderr}")
    children = psutil.Process(demo.pid).children(recursive=True)
    assert len(children) == 2, children  # the service and the worker
    return children


def all_gone(children: list[psutil.Process]) -> bool:
    _, alive = psutil.wait_procs(children, timeout=TIMEOUT_SECONDS)
    return not alive


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["module", "cli"])
@pytest.mark.parametrize(
    ("signum", "code", "last_line"),
    [
        (signal.SIGTERM, 0, "stopped (SIGTERM or SIGHUP)"),
        (signal.SIGHUP, 0, "stopped (SIGTERM or SIGHUP)"),
        (signal.SIGINT, 130, "stopped (Ctrl-C)"),
    ],
)
def test_a_signal_to_the_demo_stops_its_children_and_it_exits_quietly(
    tmp_path: Path, entry: str, signum: int, code: int, last_line: str
) -> None:
    with start_demo(tmp_path, entry) as demo:
        try:
            children = wait_serving(demo)
            demo.send_signal(signum)
            _, stderr = demo.communicate(timeout=TIMEOUT_SECONDS)
        finally:
            demo.kill()
    assert demo.returncode == code, stderr
    assert stderr.strip().splitlines() == [last_line]  # one line, no traceback
    assert all_gone(children)


@pytest.mark.slow
def test_the_children_stop_when_the_demo_is_killed(tmp_path: Path) -> None:
    with start_demo(tmp_path, "module") as demo:
        try:
            children = wait_serving(demo)
            demo.kill()  # SIGKILL: the demo cannot stop anything itself
            demo.wait(timeout=TIMEOUT_SECONDS)
        finally:
            demo.kill()
    assert all_gone(children), [child.cmdline() for child in children if child.is_running()]


@pytest.mark.slow
def test_a_taken_port_is_one_line_exit_1_and_nothing_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [sys.executable, "-m", "conveyor", "dev", "--once", "--port", str(port), "--dir", "demo"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    assert completed.returncode == 1, completed.stderr
    [line] = completed.stderr.strip().splitlines()
    assert line.startswith(f"Error: port {port} on 127.0.0.1 is in use")
    assert completed.stdout == ""
    assert list(tmp_path.iterdir()) == []
