"""`conveyor init`: write a commented conveyor.toml to start from."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor import limits as L
from conveyor.cli.output import CommandError, emit_json, out
from conveyor.cli.state import current

TEMPLATE = f"""\
# conveyor.toml: the queues, topics and consumers of this project (like wrangler.toml).
# `conveyor worker` reads it: it creates or updates the queues and topic subscriptions below, then
# runs the consumers.
# Every key is checked; an unknown or out-of-range key is an error that names it.

# Engine URL (--url and $CONVEYOR_URL take precedence). Others: postgresql://localhost/db,
# redis://localhost:6379/0, memory:// (in process).
url = "{L.DEFAULT_URL}"

# Optional: an App defined in code (module:attribute) whose consumers run along with the ones below.
# app = "myapp:app"

[[queues]]
name = "jobs"
# Seconds every message waits before delivery (0 to {L.MAX_DELAY_SECONDS:,}).
delivery_delay = 0
# Seconds a message is kept before it is deleted ({L.MIN_RETENTION_SECONDS} to {L.MAX_RETENTION_SECONDS:,}).
retention_seconds = {L.DEFAULT_RETENTION_SECONDS}
# Seconds a dedup id is remembered: a send naming it again stores nothing
# (0 turns deduplication off; at most {L.MAX_DEDUP_WINDOW_SECONDS:,}).
dedup_window_seconds = {L.DEFAULT_DEDUP_WINDOW_SECONDS}
# Refuse sends (QueueFull, HTTP 429) once the queue holds this many messages or bytes of bodies.
# max_backlog_messages = 1000000
# max_backlog_bytes = 1000000000

[[queues]]
name = "jobs-dlq"  # where messages that keep failing go

# A topic: every message published to it is copied into each subscription queue whose types
# include the message's `type` (leave `types` out for every type). Queues are created if missing.
# [[topics]]
# name = "orders"
# subscriptions = [{{ queue = "jobs", types = ["ORDER_PLACED"] }}]

# A consumer: `handler` is an async function handler(batch, env) in an importable module (the
# current directory and this file's directory are on the import path). Uncomment to use it.
# [[consumers]]
# queue = "jobs"
# handler = "handlers:handle"
# max_batch_size = {L.DEFAULT_MAX_BATCH_SIZE}  # messages per batch (1 to {L.MAX_BATCH_SIZE})
# max_batch_timeout = {L.DEFAULT_MAX_BATCH_TIMEOUT:g}  # seconds to fill a batch (max {L.MAX_BATCH_TIMEOUT:g})
# max_retries = {L.DEFAULT_MAX_RETRIES}  # retries before dead-lettering (0 to {L.MAX_RETRIES})
# retry_delay = {L.DEFAULT_RETRY_DELAY:g}  # seconds before a retried message comes back
# dead_letter_queue = "jobs-dlq"
# max_concurrency = 4  # batches at once (1 to {L.MAX_CONCURRENCY}); leave out to autoscale
# visibility_timeout = {L.DEFAULT_VISIBILITY_TIMEOUT:g}  # seconds a delivery is leased (renewed as it runs)
# max_rate = "100/s"  # lease no faster than this ("600/m", "10/h"); leave out for no limit
# max_rate_scope = "process"  # or "global": one limit for every worker (PostgreSQL, Redis, NATS)
# timeout = 60  # the handler's time limit in seconds; its unmarked messages are then retried
# retry_backoff = "exponential"  # (retry_delay then 0) random waits up to base * 2 ** (n - 1)
# retry_backoff_base = {L.DEFAULT_RETRY_BACKOFF_BASE:g}  # seconds
# retry_backoff_cap = {L.DEFAULT_RETRY_BACKOFF_CAP:g}  # seconds, the longest wait

# A schedule: every worker sends `body` to `queue` on a cron expression (read in `tz`) or
# `every` N seconds ("30s", "5m"), one message per tick however many workers run.
# [[schedules]]
# queue = "jobs"
# cron = "*/5 * * * *"  # or: every = "30s"
# tz = "UTC"
# body = {{ task = "report" }}

# The worker's Prometheus metrics at http://host:port/metrics (--metrics-port and --metrics-host
# take precedence). Uncomment to serve them.
# [metrics]
# port = 9464
# host = "{L.DEFAULT_METRICS_HOST}"  # this machine only; "0.0.0.0" for every interface
"""


def register(cli: typer.Typer) -> None:
    cli.command("init")(init)


def init(
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented conveyor.toml (to --config's path, default ./conveyor.toml)."""
    state = current()
    path = state.config_path
    if path.exists() and not force:
        raise CommandError(f"{path} already exists; use --force to overwrite it", code="file_exists")
    path.write_text(TEMPLATE, encoding="utf-8")
    if state.json:
        emit_json({"path": str(path), "written": True})
    else:
        out().print(
            f"Wrote {path}: declare your queues and consumers there, then run `conveyor worker`.",
            markup=False,
        )
