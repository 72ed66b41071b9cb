"""SQLite's own faults: the disk under the database fills up; eight processes share one file."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

from reliability.ledger import read_records
from reliability.scenarios.base import Context, Scenario

# The tmpfs the full-disk scenario puts the database on, and what it grows to once space is freed.
FULL_DISK_SIZE = "6m"
FREED_DISK_SIZE = "256m"
# How long the disk stays full while the worker keeps working.
FULL_SECONDS = 3.0


def can_mount() -> str | None:
    """The full-disk scenario mounts a small tmpfs: it needs root and mount(8)."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs"
    if shutil.which("mount") is None:
        return "mount(8) is not installed"
    return None


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


async def full_disk(ctx: Context) -> None:
    """The database lives on a 6 MB tmpfs. A producer (1 KB bodies) outruns a slow worker until the
    disk is full; the disk stays full for 3 s while the worker keeps completing messages (their
    acks must still be durable, and producers must get conveyor errors); then space is freed."""
    disk = ctx.run_dir / "disk"
    disk.mkdir()
    try:
        await asyncio.to_thread(_mount, "-t", "tmpfs", "-o", f"size={FULL_DISK_SIZE}", "tmpfs", str(disk))
    except subprocess.CalledProcessError as exc:
        ctx.notes.append(f"cannot mount a tmpfs here: {exc.stderr.decode(errors='replace').strip()}")
        raise

    async def unmount() -> None:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], check=False, capture_output=True)

    ctx.on_close(unmount)
    await ctx.use_url(f"sqlite:///{disk / 'conveyor.db'}")
    ctx.worker_settings = ctx.worker_settings.but(handler_seconds=0.1, max_concurrency=2)
    count = ctx.size(20_000, 40_000)
    producer = ctx.start_producer(
        ctx.plan(tag="p", count=count, batch=20, concurrency=2, pad_bytes=1_000, rate=3_000)
    )
    ctx.start_worker()
    if not await ctx.wait_for(lambda: _failed_sends(ctx.ledger_dir) > 0, "a send failed on the full disk"):
        return
    ctx.engine_fault("disk full")
    before_total, before_done = await ctx.total(), ctx.completions()
    await asyncio.sleep(FULL_SECONDS)
    after_total, after_done = await ctx.total(), ctx.completions()
    ctx.processes.kill(producer, signal.SIGKILL)
    ctx.notes.append(
        f"while the disk was full: {after_done - before_done} completions, "
        f"queue {before_total} -> {after_total}"
    )
    known = before_total is not None and after_total is not None
    if known and after_done > before_done and (after_total or 0) >= (before_total or 0):
        ctx.violations.append("acks failed while the disk was full: the queue did not shrink")
    await asyncio.to_thread(_mount, "-o", f"remount,size={FREED_DISK_SIZE}", str(disk))
    ctx.engine_recovered("space freed")


def _failed_sends(ledger: Path) -> int:
    return sum(1 for record in read_records(ledger, "sends") if record["e"] in ("failed", "unknown"))


async def eight_processes(ctx: Context) -> None:
    """Four producers (two with 10 concurrent sends, two with batches of 20) and four workers on
    one SQLite file; one worker is SIGKILLed halfway and started again."""
    count = ctx.size(1_000, 8_000)  # per producer
    rate = count / (ctx.budget * 0.6)
    for tag in ("one-a", "one-b"):
        ctx.start_producer(ctx.plan(tag=tag, count=count, batch=1, concurrency=10, rate=rate))
    for tag in ("many-a", "many-b"):
        ctx.start_producer(ctx.plan(tag=tag, count=count, batch=20, concurrency=1, rate=rate))
    workers = [ctx.start_worker() for _ in range(4)]
    if await ctx.wait_for(lambda: ctx.completions() >= 2 * count, f"{2 * count} completions"):
        ctx.processes.kill(workers[0].child, signal.SIGKILL)


SCENARIOS = [
    Scenario(
        "sqlite-full-disk",
        "the disk under the SQLite file fills up (a 6 MB tmpfs), then space is freed",
        full_disk,
        engines=("sqlite",),
        issue="26.8",
        requires=can_mount,
    ),
    Scenario(
        "sqlite-8-processes",
        "4 producers and 4 workers on one SQLite file, one worker SIGKILLed",
        eight_processes,
        engines=("sqlite",),
        issue="26",
    ),
]
