"""The README's command-line session, reproduced: its conveyor.toml and handlers.py are written to a
fresh folder, its commands run there one by one, and each output must be the README's once ids,
times, ages and rates are masked. Between two commands the test waits until the worker has nothing
left to do, as a person typing them would have. `README_SESSION_OUT=session.txt pytest -k readme`
writes the session this run printed, to paste into the README after a change."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import conveyor

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# Bounds for each wait; the whole session takes a few seconds when things work.
WAIT_SECONDS = 60.0
WORKER_LOG = "worker.log"

# Parts of an output that differ from run to run, and what they are masked as.
VARIABLE = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"), "<log time>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT[\d:.+]+"), "<datetime>"),
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "<time>"),
    (re.compile(r"\bpid \d+"), "pid <n>"),
    (re.compile(r"\b[\d,]+ msg/s"), "<n> msg/s"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<seconds>"),
]
# rich sizes its tables to their content: compare cells, not padding
PADDING = re.compile(r"[ ━─]+")


def normalize(output: str) -> list[str]:
    lines = []
    for line in output.strip("\n").splitlines():
        for pattern, mask in VARIABLE:
            line = pattern.sub(mask, line)
        lines.append(PADDING.sub(" ", line).strip())
    return lines


@dataclass
class Command:
    line: str
    output: str

    @property
    def background(self) -> bool:
        return self.line.endswith("&")


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def readme_session() -> tuple[str, str, list[Command]]:
    """conveyor.toml, handlers.py and the commands with their outputs, as the README shows them."""
    text = README.read_text()
    (toml,) = [block for block in fenced_blocks(text, "toml") if "[[consumers]]" in block]
    (handlers,) = [block for block in fenced_blocks(text, "python") if block.startswith("# handlers.py")]
    (session,) = [block for block in fenced_blocks(text, "console") if "$ conveyor worker" in block]
    commands: list[Command] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:], ""))
        else:
            commands[-1].output += line + "\n"
    return toml, handlers, commands


def stored_messages(url: str, queue: str) -> int:
    async def total() -> int:
        async with conveyor.App(url) as app:
            return (await app.queue(queue).stats()).total

    return asyncio.run(total())


def wait_until(condition: str, check: Callable[[], bool], worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited early"
        if check():
            return
        time.sleep(0.05)  # another process does the work: polling is the only way to see it
    raise AssertionError(f"timed out waiting until {condition}")


@pytest.mark.slow
def test_the_readme_session_runs_as_shown(tmp_path: Path) -> None:
    toml, handlers, commands = readme_session()
    (tmp_path / "conveyor.toml").write_text(toml)
    (tmp_path / "handlers.py").write_text(handlers)
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "100"

    assert commands[0].line == f"conveyor worker > {WORKER_LOG} 2>&1 &"
    worker = subprocess.Popen(
        ["bash", "-c", f"exec {commands[0].line.removesuffix('&')}"], cwd=tmp_path, env=env
    )
    log = tmp_path / WORKER_LOG
    try:
        # the banner is printed once the worker has created the queues of conveyor.toml
        started = lambda: log.exists() and "conveyor worker ·" in log.read_text()  # noqa: E731
        wait_until("the worker is up", started, worker)
        banner = log.read_text().splitlines()[0]
        assert banner.startswith(
            "conveyor worker · engine sqlite:///conveyor.db · queues: jobs, jobs-dlq · "
            "consumers: jobs → handlers:handle (batch 10, concurrency auto, dlq jobs-dlq)"
        )
        actual: list[Command] = [Command(commands[0].line, "")]
        for command in commands[1:]:
            if command.line == "kill %1 && wait %1":
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=WAIT_SECONDS) == 0
                actual.append(Command(command.line, ""))
                continue
            if worker.returncode is None:
                wait_until("the worker is idle", lambda: stored_messages(url, "jobs") == 0, worker)
            ran = subprocess.run(
                ["bash", "-c", command.line], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            actual.append(Command(command.line, ran.stdout + ran.stderr))
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    transcript = "".join(f"$ {command.line}\n{command.output}" for command in actual)
    if os.environ.get("README_SESSION_OUT"):  # to refresh the README: write what this run printed
        Path(os.environ["README_SESSION_OUT"]).write_text(transcript)
    for shown, done in zip(commands, actual, strict=True):
        assert normalize(done.output) == normalize(shown.output), (
            f"`{shown.line}` printed something else than the README shows; the whole session:\n{transcript}"
        )
    # the outputs that matter, spelt out
    by_line = {command.line: command.output for command in actual}
    sent = by_line["conveyor send jobs --file tasks.jsonl"]
    assert "Sent 1,000 message(s) to 'jobs' in 10 batch(es)" in sent
    peeked = by_line["conveyor messages peek jobs-dlq"]
    assert "jobs-dlq: 1 message(s), oldest first" in peeked
    assert "RuntimeError: cannot process task 1002" in peeked
    replayed = by_line["conveyor messages replay jobs-dlq --to jobs"]
    assert replayed == "Replayed 1 message(s) from 'jobs-dlq' to 'jobs'.\n"
    assert stored_messages(url, "jobs-dlq") == 1  # the replayed message failed again
    assert stored_messages(url, "jobs") == 0
