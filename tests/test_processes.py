"""conveyor/processes.py: a child started with `stop_with_me()` that calls `watch_parent()` stops
when its parent ends, however it ends (what the benchmarks' server, load and backlog processes and
the demo's service and worker rely on). Real processes, SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conveyor.processes import PARENT_PIPE_ENV, terminate, watch_parent

WAIT_SECONDS = 60.0

CHILD = """
import time
from conveyor.processes import watch_parent

assert watch_parent()
print("watching", flush=True)
time.sleep(600)
"""

PARENT = """
import subprocess, sys, time
from conveyor.processes import stop_with_me

child = subprocess.Popen([sys.executable, "child.py"], **stop_with_me())
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_watching_child_stops_when_its_parent_dies(tmp_path: Path, signum: int) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    with subprocess.Popen(
        [sys.executable, "parent.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            child = psutil.Process(int(parent.stdout.readline()))
            parent.send_signal(signum)  # the parent does nothing about its child itself
            parent.wait(timeout=WAIT_SECONDS)
        finally:
            parent.kill()
    child.wait(timeout=WAIT_SECONDS)  # psutil.TimeoutExpired if the child outlived its parent


def test_without_a_parent_pipe_there_is_nothing_to_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_PIPE_ENV, raising=False)
    assert watch_parent() is False


def test_terminate_stops_a_child_with_sigterm_and_one_that_ignores_it_with_sigkill() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ignores_sigterm = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = subprocess.Popen([sys.executable, "-c", ignores_sigterm], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    terminate(polite, timeout=10)
    terminate(stubborn, timeout=0.5)
    assert (polite.returncode, stubborn.returncode) == (-signal.SIGTERM, -signal.SIGKILL)
    terminate(polite, timeout=10)  # already gone: nothing to do
    stubborn.stdout.close()
