"""The demo's service and worker stop with the demo, however it ends: SIGTERM, SIGHUP and Ctrl-C
stop them in order; SIGKILL leaves them to notice (conveyor/processes.py). A taken port is one
error line before anything is created. Real processes, real signals."""

from __future__ import annotations

import os
import shutil
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


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        (signal.SIGTERM, False),  # `kill <make>`: make passes SIGTERM on to its recipe
        (signal.SIGHUP, True),  # a closed terminal: SIGHUP to the whole foreground group
        (signal.SIGKILL, False),  # make killed: the demo gets SIGHUP from the kernel (PDEATHSIG)
    ],
)
def test_make_demo_stops_with_its_children(tmp_path: Path, signum: int, to_group: bool) -> None:
    demo_args = f"--port 0 --visits 50 --dir {tmp_path / 'demo'}"
    command = ["make", "-s", "-C", str(REPO), "demo", f"DEMO_ARGS={demo_args}"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as make:
        try:
            assert make.stdout is not None
            for line in make.stdout:
                if "Analytics:" in line:
                    break
            processes = psutil.Process(make.pid).children(recursive=True)
            assert len(processes) == 3, processes  # the demo, its service and its worker
            if to_group:
                os.killpg(make.pid, signum)
            else:
                make.send_signal(signum)
            make.wait(timeout=TIMEOUT_SECONDS)
        finally:
            make.kill()
    assert all_gone(processes), [p.cmdline() for p in processes if p.is_running()]
