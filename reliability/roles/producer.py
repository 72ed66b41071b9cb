"""A producer: `python -m reliability.roles.producer` sends a ProducePlan (RELIABILITY_PRODUCER)
to CONVEYOR_URL, recording every call in the ledger: its keys before the call, its outcome after.

`produce()` is the same loop for a harness that sends from its own process (the backlog fill).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import conveyor
from conveyor.errors import BackendUnavailable, ConveyorError, StorageFull
from reliability.ledger import LedgerFile, now
from reliability.roles.settings import PRODUCER_ENV, ProducePlan

# Errors after which, by conveyor's documentation (docs/semantics.md, "Ambiguous sends"), a send
# may or may not have been stored: a cancelled send, and BackendUnavailable once conveyor's own
# retries with the same ids gave up (issue 26 item 6), except StorageFull (nothing was written).
AMBIGUOUS_ERRORS: tuple[type[BaseException], ...] = (BackendUnavailable,)
UNAMBIGUOUS_ERRORS: tuple[type[BaseException], ...] = (StorageFull,)


def bodies(plan: ProducePlan, first: int, last: int) -> tuple[list[str], list[dict[str, Any]]]:
    poison = plan.poison_kinds()
    keys = [f"{plan.tag}-{n}" for n in range(first, last)]
    items: list[dict[str, Any]] = []
    for n, key in zip(range(first, last), keys, strict=True):
        body: dict[str, Any] = {"key": key}
        if n in poison:
            body["poison"] = poison[n]
        if plan.pad_bytes:
            body["pad"] = "x" * plan.pad_bytes
        items.append(body)
    return keys, items


def outcome_record(number: int, exc: BaseException) -> dict[str, Any]:
    ambiguous = isinstance(exc, (asyncio.CancelledError, *AMBIGUOUS_ERRORS)) and not isinstance(
        exc, UNAMBIGUOUS_ERRORS
    )
    return {
        "e": "unknown" if ambiguous else "failed",
        "n": number,
        "error": f"{type(exc).__name__}: {exc}"[:500],
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "conveyor": isinstance(exc, ConveyorError | asyncio.CancelledError),
    }


async def produce(app: conveyor.App, plan: ProducePlan, ledger: LedgerFile) -> tuple[int, int]:
    """Send `plan`; (messages acknowledged, messages whose call failed)."""
    queue = app.queue(plan.queue)
    end = plan.start + plan.count
    firsts = iter(range(plan.start, end, plan.batch))
    started = time.monotonic()
    counts = [0, 0]

    async def sender() -> None:
        for first in firsts:  # one iterator shared by every task: each batch is sent once
            if plan.rate:
                await asyncio.sleep(max(0.0, started + (first - plan.start) / plan.rate - time.monotonic()))
            keys, items = bodies(plan, first, min(first + plan.batch, end))
            ledger.write({"e": "try", "n": first, "keys": keys, "t": now()})
            try:
                if plan.batch == 1:
                    ids = [await queue.send(items[0])]
                else:
                    ids = await queue.send_batch(items)
            except asyncio.CancelledError as exc:
                ledger.write(outcome_record(first, exc))
                raise
            except Exception as exc:
                ledger.write(outcome_record(first, exc))
                counts[1] += len(keys)
                continue
            ledger.write({"e": "ok", "n": first, "ids": ids, "t": now()})
            counts[0] += len(keys)

    await asyncio.gather(*(sender() for _ in range(plan.concurrency)))
    return counts[0], counts[1]


async def main() -> None:
    plan = ProducePlan.from_env(PRODUCER_ENV)
    ledger = LedgerFile(Path(plan.ledger), "sends")
    async with conveyor.App(os.environ["CONVEYOR_URL"]) as app:
        sent, failed = await produce(app, plan, ledger)
    print(f"producer {plan.tag}: {sent} sent, {failed} failed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
