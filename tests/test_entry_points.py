"""How conveyor's entry points end, as a user meets them: real processes, real signals.

The README's first program sends, handles and exits, naming where its SQLite file is; Ctrl-C
(SIGINT) in `app.run()`, `conveyor worker`, `conveyor serve` and any other command stops it with
one line and exit code 130, without a traceback. (The demo: tests/demo/test_stops.py.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a bound on every wait, never an assertion on speed
WAIT_SECONDS = 45.0


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}


def readme_first_program() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## A first program") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match[1]


@pytest.mark.slow
def test_the_readme_first_program_sends_handles_and_exits(tmp_path: Path) -> None:
    (tmp_path / "first.py").write_text(readme_first_program())
    completed = subprocess.run(
        [sys.executable, "first.py"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "hello, Ada\n"
    [line] = completed.stderr.splitlines()  # where its data went, in one line
    assert str(tmp_path / "greetings.db") in line
    assert (tmp_path / "greetings.db").exists()


UNTIL_IDLE = """
import conveyor

app = conveyor.App("sqlite:///idle.db")


@app.consumer("jobs", max_batch_size=100, max_batch_timeout=60)
async def handle(batch, env):
    print(len(batch.messages), flush=True)


app.queue("jobs").send_batch_sync([{"n": n} for n in range(3)])
print("handled", app.run(until_idle=True))
"""


@pytest.mark.slow
def test_run_until_idle_does_not_wait_for_a_batch_to_fill(tmp_path: Path) -> None:
    (tmp_path / "idle.py").write_text(UNTIL_IDLE)
    # max_batch_timeout is 60 s, longer than the bound: a run that waited for it would time out
    completed = subprocess.run(
        [sys.executable, "idle.py"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["3", "handled 3"]


RUN_FOREVER = """
import conveyor

app = conveyor.App("sqlite:///forever.db")


@app.consumer("jobs", max_batch_timeout=0)
async def handle(batch, env):
    print("handled", flush=True)


app.queue("jobs").send_sync({"n": 1})
app.run()
"""


def interrupt_after(process: subprocess.Popen[str], marker: str) -> tuple[str, str]:
    """Read stdout until `marker`, send SIGINT (Ctrl-C), return the rest of stdout and stderr."""
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:
        seen += line
        if marker in line:
            break
    else:
        raise AssertionError(f"{marker!r} never came (exit {process.wait()}): {seen}")
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=WAIT_SECONDS)
    return seen + rest, errors


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_ctrl_c_in_app_run_is_one_line_and_exit_130(tmp_path: Path) -> None:
    (tmp_path / "forever.py").write_text(RUN_FOREVER)
    with start([sys.executable, "forever.py"], tmp_path) as process:
        try:
            _, errors = interrupt_after(process, "handled")
        finally:
            process.kill()
    assert process.returncode == 130, errors
    assert errors.splitlines()[-1] == "conveyor: stopped (Ctrl-C)"
    assert len(errors.splitlines()) == 2  # the start line and the stop line
    assert "Traceback" not in errors


@pytest.mark.slow
def test_ctrl_c_stops_conveyor_worker_with_one_line_and_exit_130(tmp_path: Path) -> None:
    (tmp_path / "quiet_handlers.py").write_text("async def handle(batch, env):\n    pass\n")
    (tmp_path / "conveyor.toml").write_text(
        'url = "sqlite:///w.db"\n[[consumers]]\nqueue = "jobs"\nhandler = "quiet_handlers:handle"\n'
    )
    with start([sys.executable, "-m", "conveyor", "worker"], tmp_path) as process:
        try:
            output, errors = interrupt_after(process, "conveyor worker ·")
        finally:
            process.kill()
    assert process.returncode == 130, errors
    assert output.splitlines()[-1] == "conveyor worker stopped (Ctrl-C)."
    assert "Traceback" not in errors


@pytest.mark.slow
def test_ctrl_c_stops_conveyor_serve_with_one_line_and_exit_130(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "conveyor", "--url", "sqlite:///s.db", "serve", "--port", "0"]
    with start(command, tmp_path) as process:
        try:
            output, errors = interrupt_after(process, "conveyor serve ·")
        finally:
            process.kill()
    assert process.returncode == 130, errors
    assert output.splitlines()[-1] == "conveyor serve stopped (Ctrl-C)."
    assert "Traceback" not in errors


@pytest.mark.slow
def test_ctrl_c_in_any_other_command_is_one_line_and_exit_130(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "conveyor", "--url", "sqlite:///t.db", "--json", "top"]
    with start(command, tmp_path) as process:
        try:
            _, errors = interrupt_after(process, '"queues"')
        finally:
            process.kill()
    assert process.returncode == 130, errors
    assert errors.splitlines() == ["Interrupted (Ctrl-C)."]
