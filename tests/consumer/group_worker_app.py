"""A worker process for the ordered-group crash test: `python -m tests.consumer.group_worker_app`.

Configured by environment: CONVEYOR_URL (the queue), WORKER_LOG (a file that gets one line per
message: "start|done <group> <n> <attempts>").
"""

from __future__ import annotations

import asyncio
import os

import conveyor

app = conveyor.App()
LOG_PATH = os.environ["WORKER_LOG"]


def _log(kind: str, batch: conveyor.MessageBatch) -> None:
    lines = "".join(
        f"{kind} {message.group} {message.body['n']} {message.attempts}\n" for message in batch.messages
    )
    with open(LOG_PATH, "a") as log:  # one write per batch: a SIGKILL cannot split a line
        log.write(lines)
        log.flush()
        os.fsync(log.fileno())


@app.consumer("jobs", max_batch_size=10, max_batch_timeout=0.05, max_concurrency=4, visibility_timeout=2)
async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    _log("start", batch)
    await asyncio.sleep(0.05)
    _log("done", batch)


if __name__ == "__main__":
    print("worker ready", flush=True)
    asyncio.run(app.run_worker(shutdown_grace=20))
