"""The real thing: `python -m conveyor worker` as its own process with only a conveyor.toml and a
module of handler functions; messages sent by another `conveyor` process; stopped by SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

# Bounds for each wait; the test finishes in about a second when things work.
WAIT_SECONDS = 30.0

HANDLERS = """
from pathlib import Path
from typing import IO

OUT = Path(__file__).parent / "handled.txt"


async def handle(batch, env):
    with OUT.open("a") as out:
        for message in batch.messages:
            out.write(f"{message.body['n']}\\n")
"""


def conveyor_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "conveyor", *args]


def forward(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def wait_for_lines(path: Path, count: int, worker: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited early"
        if path.exists() and len(lines := path.read_text().split()) >= count:
            return lines
        time.sleep(0.05)  # another process writes the file: polling is the only way to see it
    raise AssertionError(f"only {path.read_text().split() if path.exists() else []} handled in time")


@pytest.mark.slow
def test_worker_process_consumes_from_conveyor_toml_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "jobs_handlers.py").write_text(HANDLERS)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "sqlite:///{tmp_path / "worker.db"}"\n'
        '[[queues]]\nname = "jobs"\n'
        '[[consumers]]\nqueue = "jobs"\nhandler = "jobs_handlers:handle"\n'
        'max_batch_timeout = 0.1\ndead_letter_queue = "jobs-dlq"\n'
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    with (tmp_path / "worker.err").open("w") as errors:
        worker = subprocess.Popen(
            conveyor_command("worker"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert worker.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=forward, args=(worker.stdout, lines), daemon=True)
    reader.start()
    try:
        banner = lines.get(timeout=WAIT_SECONDS)  # printed once the queues exist
        (tmp_path / "m.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(25)))
        sent = subprocess.run(
            conveyor_command("send", "jobs", "--file", "m.jsonl"),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        handled = wait_for_lines(tmp_path / "handled.txt", 25, worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT_SECONDS) == 0, (tmp_path / "worker.err").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        reader.join(timeout=WAIT_SECONDS)
        worker.stdout.close()
    assert sorted(map(int, handled)) == list(range(25))
    assert banner.startswith("conveyor worker · engine sqlite:///")
    assert "queues: jobs, jobs-dlq" in banner
    assert "jobs → jobs_handlers:handle" in banner
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert rest[-1].strip() == "conveyor worker stopped."
