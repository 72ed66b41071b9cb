"""A scrape of a running worker: `python -m conveyor worker --metrics-port 0` as its own process,
messages sent by this one, /metrics read over HTTP while it runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import conveyor

# Bounds for each wait; the test finishes in a few seconds when things work.
WAIT_SECONDS = 30.0

HANDLERS = """
async def handle(batch, env):
    for message in batch.messages:
        kind = message.body["kind"]
        if kind == "poison" or (kind == "flaky" and message.attempts == 1):
            message.retry()
"""

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(url: str) -> tuple[str, Samples]:
    text = httpx.get(url, timeout=WAIT_SECONDS).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return text, samples


def jobs(samples: Samples, name: str, queue: str = "jobs") -> float:
    return samples.get(name, {}).get((("queue", queue),), 0.0)


def scrape_until(
    url: str, worker: subprocess.Popen[str], done: Callable[[Samples], bool], what: str
) -> tuple[str, Samples]:
    """Scrape until `done(samples)` holds (another process does the work: polling is the way)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        assert worker.poll() is None, "the worker exited early"
        text, samples = scrape(url)
        if done(samples):
            return text, samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}: {text}")
        time.sleep(0.1)


def send(url: str, queue: str, bodies: Sequence[object], *, pause: bool = False) -> None:
    async def main() -> None:
        async with conveyor.App(url) as app:
            if pause:
                await app.queue(queue).pause()
            await app.queue(queue).send_batch(bodies)

    asyncio.run(main())


@pytest.mark.slow
def test_a_running_worker_serves_its_counts_histograms_and_sampled_backlog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    (tmp_path / "metrics_handlers.py").write_text(HANDLERS)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{url}"\n'
        '[[queues]]\nname = "jobs"\n'
        '[[consumers]]\nqueue = "jobs"\nhandler = "metrics_handlers:handle"\n'
        'max_batch_timeout = 0.1\nmax_retries = 2\ndead_letter_queue = "jobs-dlq"\n'
        "[metrics]\nport = 1\n"  # the option below wins
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    with (tmp_path / "worker.err").open("w") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--json", "worker", "--metrics-port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert worker.stdout is not None
    try:
        started = json.loads(worker.stdout.readline() or "{}")  # printed once the endpoint listens
        assert started.get("event") == "started", (tmp_path / "worker.err").read_text()
        metrics_url = started["metrics"]
        assert metrics_url.startswith("http://127.0.0.1:") and metrics_url.endswith("/metrics")

        # 12 fine, 4 flaky (retried once), 3 poison (3 deliveries, then the dead-letter queue)
        bodies = [{"kind": "ok"}] * 12 + [{"kind": "flaky"}] * 4 + [{"kind": "poison"}] * 3
        send(url, "jobs", bodies)
        text, samples = scrape_until(
            metrics_url,
            worker,
            lambda samples: (
                jobs(samples, "conveyor_worker_messages_acked_total") == 16
                and jobs(samples, "conveyor_worker_messages_dead_lettered_total") == 3
            ),
            "every message was acked or dead-lettered",
        )
        assert "_created" not in text
        assert jobs(samples, "conveyor_worker_messages_received_total") == 12 + 4 * 2 + 3 * 3
        assert jobs(samples, "conveyor_worker_messages_retried_total") == 4 + 3 * 2
        assert jobs(samples, "conveyor_worker_leases_lost_total") == 0
        batches = jobs(samples, "conveyor_worker_batch_size_count")
        assert batches >= 3  # first deliveries, then each round of retries
        assert jobs(samples, "conveyor_worker_batch_size_sum") == 29
        assert jobs(samples, "conveyor_worker_handler_duration_seconds_count") == batches
        assert samples["conveyor_worker_batch_size_bucket"][(("le", "+Inf"), ("queue", "jobs"))] == batches
        assert (("queue", "jobs"),) in samples["conveyor_worker_concurrency_in_use"]
        [(labels, _)] = samples["conveyor_build_info"].items()
        assert ("version", conveyor.__version__) in labels
        assert samples["process_resident_memory_bytes"][()] > 0

        # the backlog gauges follow the engine through the background sampler
        scrape_until(
            metrics_url,
            worker,
            lambda samples: jobs(samples, "conveyor_queue_backlog", "jobs-dlq") == 3,
            "the dead-letter queue's backlog showed 3",
        )
        send(url, "jobs", [{"kind": "ok"}] * 5, pause=True)
        scrape_until(
            metrics_url,
            worker,
            lambda samples: (
                jobs(samples, "conveyor_queue_backlog") == 5 and jobs(samples, "conveyor_queue_paused") == 1
            ),
            "the paused queue's backlog showed the 5 messages sent",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT_SECONDS) == 0, (tmp_path / "worker.err").read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(metrics_url, timeout=WAIT_SECONDS)  # the endpoint stopped with the worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()


@pytest.mark.slow
def test_a_taken_metrics_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    app = conveyor.App("memory://")
    taken = app.serve_metrics(0)
    (tmp_path / "metrics_handlers.py").write_text(HANDLERS)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "sqlite:///{tmp_path / "worker.db"}"\n'
        '[[consumers]]\nqueue = "jobs"\nhandler = "metrics_handlers:handle"\n'
        f"[metrics]\nport = {taken.port}\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "conveyor", "worker"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )
    finally:
        taken.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{taken.port}: the port is in use [metrics_server_failed]"
    ]
    assert "conveyor worker ·" not in result.stdout  # stopped before the banner: nothing leased
