"""An HTTP pull consumer of `conveyor serve`: `python -m reliability.roles.pull_client`.

Pulls a batch, records it in the ledger as handled (fsynced), waits `hold_seconds` (where a kill
lands mid-batch) and acknowledges it; SIGTERM stops it between batches.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import httpx

from reliability.ledger import LedgerFile, now
from reliability.roles.settings import PULL_ENV, PullSettings

# How long an empty pull waits before the next.
IDLE_SECONDS = 0.05
REQUEST_TIMEOUT_SECONDS = 30.0

stopping = False


def _stop(signum: int, frame: FrameType | None) -> None:
    global stopping
    stopping = True


def main() -> None:
    settings = PullSettings.from_env(PULL_ENV)
    done = LedgerFile(Path(settings.ledger), "done")
    signal.signal(signal.SIGTERM, _stop)
    messages_url = f"/queues/{settings.queue}/messages"
    with httpx.Client(base_url=settings.base_url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        while not stopping:
            reply = client.post(
                f"{messages_url}/pull",
                json={
                    "batch_size": settings.batch_size,
                    "visibility_timeout_ms": settings.visibility_timeout_ms,
                },
            )
            reply.raise_for_status()
            messages = reply.json()["result"]["messages"]
            if not messages:
                time.sleep(IDLE_SECONDS)
                continue
            started = now()
            done.write(
                *(
                    {
                        "id": m["id"],
                        "key": m["body"]["key"],
                        "pid": os.getpid(),
                        "a": m["attempts"],
                        "s": started,
                        "t": now(),
                    }
                    for m in messages
                )
            )
            time.sleep(settings.hold_seconds)
            acks = [{"lease_id": m["lease_id"]} for m in messages]
            client.post(f"{messages_url}/ack", json={"acks": acks}).raise_for_status()


if __name__ == "__main__":
    main()
