"""`conveyor worker [APP]`: run an app's consumers (from `module:app` and/or conveyor.toml) until
SIGTERM or Ctrl-C, then drain the batches in flight and exit 0 (130 after Ctrl-C). A consumer that
dies stops the others gracefully and the worker exits 1 with its error, so a supervisor starts it
again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor import limits as L
from conveyor.app import App
from conveyor.cli import metrics_options
from conveyor.cli.config import (
    ConveyorConfig,
    apply_queues,
    apply_topics,
    load_app,
    register_consumers,
    register_schedules,
)
from conveyor.cli.interrupt import Terminated, raise_terminated, stopped
from conveyor.cli.logs import LOG_FORMAT_HELP, LogFormat, LogLevel, configure_logging
from conveyor.cli.output import CommandError, emit_json, out, parse_seconds
from conveyor.cli.state import CliState, current
from conveyor.consumer.spec import ConsumerSpec


def register(cli: typer.Typer) -> None:
    cli.command("worker")(worker)


def worker(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="APP",
            # \[ keeps rich from reading [[consumers]] as markup
            help="module:attribute of a conveyor.App with consumers. Default: `app` in conveyor.toml, "
            "else an App built from its \\[\\[consumers]].",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            max=L.MAX_CONCURRENCY,
            help="Batches each consumer may run at once (overrides max_concurrency; default: autoscale).",
            show_default=False,
        ),
    ] = None,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            "--shutdown-grace",
            parser=parse_seconds,
            metavar="DURATION",
            help="After SIGTERM/Ctrl-C, how long batches in flight may take to finish.",
        ),
    ] = L.DEFAULT_SHUTDOWN_GRACE_SECONDS,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level on stderr.")] = LogLevel.info,
    log_format: Annotated[LogFormat, typer.Option("--log-format", help=LOG_FORMAT_HELP)] = LogFormat.text,
    metrics_port: Annotated[int | None, metrics_options.PORT] = None,
    metrics_host: Annotated[str | None, metrics_options.HOST] = None,
) -> None:
    """Run consumers until SIGTERM or Ctrl-C (graceful: batches in flight finish, the rest is released).

    Exits 0 after SIGTERM, 130 after Ctrl-C; 1 when a consumer died (at start-up, e.g. a missing
    dead-letter queue, or later): the other consumers are stopped gracefully first.

    With --url (or conveyor.toml's url), an imported App() that names no URL uses it too.
    """
    # SIGTERM during start-up (imports, queue set-up) stops cleanly too; run_worker then installs
    # its own graceful handler for the rest of the run.
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        stopped_by = _run(
            target, concurrency, shutdown_grace, log_level, log_format, (metrics_port, metrics_host)
        )
    except Terminated:
        stopped_by = signal.SIGTERM  # before the consumers started: nothing was leased
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    stopped("conveyor worker", stopped_by)


def _run(
    target: str | None,
    concurrency: int | None,
    shutdown_grace: float,
    log_level: LogLevel,
    log_format: LogFormat,
    metrics: tuple[int | None, str | None],
) -> int | None:
    """Run the worker; the signal that stopped it."""
    state = current()
    configure_logging(log_level, log_format)
    config = state.config()
    app, handlers = build_app(state, config, target)
    if concurrency is not None:
        app.consumers[:] = [replace(spec, max_concurrency=concurrency) for spec in app.consumers]
    if not app.consumers and not app.schedules:
        raise CommandError(
            f"{target or 'the app'} has no consumers: register one with @app.consumer(queue) "
            "or declare [[consumers]] in conveyor.toml (or a schedule: [[schedules]])",
            code="no_consumers",
        )

    async def serve() -> int | None:
        metrics_port, metrics_host = metrics_options.served(config, *metrics)
        try:
            if config is not None:
                await apply_queues(app, config)
                await apply_topics(app, config)
            # before the banner: a taken port stops the worker before it leases anything
            server = None if metrics_port is None else app.serve_metrics(metrics_port, metrics_host)
        except BaseException:
            await app.close()
            raise
        try:
            _banner(state, app, config, handlers, None if server is None else server.url)
            return await app.run_worker(shutdown_grace=shutdown_grace)
        finally:
            if server is not None:
                await server.aclose()

    return asyncio.run(serve())


def build_app(
    state: CliState, config: ConveyorConfig | None, target: str | None
) -> tuple[App, dict[str, str]]:
    """The App to run (its consumers and schedules: `module:app` and conveyor.toml's) and, per
    consumed queue, the handler's name for the banner."""
    search: list[Path] = [state.config_folder()] if config is not None else []
    app_path = target or (config.app if config is not None else None)
    if app_path is not None:
        if state.url_option or (config is not None and config.url):
            os.environ[L.URL_ENV_VAR] = state.url()  # for an App() in the module that names no URL
        app = load_app(app_path, search=search)
    elif config is not None and (config.consumers or config.schedules):
        app = App(state.url())
    else:
        where = f"{state.config_path} declares no consumers" if config is not None else "no conveyor.toml"
        raise CommandError(
            f"nothing to run: give APP (module:app), or declare [[consumers]] in conveyor.toml ({where})",
            code="no_consumers",
        )
    handlers = {spec.queue: _handler_name(spec) for spec in app.consumers}
    if config is not None:
        register_consumers(app, config, search=search)
        register_schedules(app, config)
        handlers.update({consumer.queue: consumer.handler for consumer in config.consumers})
    return app, handlers


def _handler_name(spec: ConsumerSpec) -> str:
    module: Any = getattr(spec.handler, "__module__", None)
    return f"{module}:{spec.name}" if module else spec.name


def _banner(
    state: CliState,
    app: App,
    config: ConveyorConfig | None,
    handlers: dict[str, str],
    metrics_url: str | None,
) -> None:
    queues = set(config.queue_names() if config is not None else [])
    queues.update(schedule.queue for schedule in app.schedules)
    for spec in app.consumers:
        queues.add(spec.queue)
        if spec.dead_letter_queue is not None:
            queues.add(spec.dead_letter_queue)
    if state.json:
        emit_json(
            {
                "event": "started",
                "engine": app.url,
                "queues": sorted(queues),
                "consumers": [
                    {
                        "queue": spec.queue,
                        "handler": handlers.get(spec.queue, spec.name),
                        "max_batch_size": spec.max_batch_size,
                        "max_concurrency": spec.max_concurrency,
                        "dead_letter_queue": spec.dead_letter_queue,
                    }
                    for spec in app.consumers
                ],
                "schedules": [
                    {"name": schedule.name, "queue": schedule.queue, "timing": schedule.timing}
                    for schedule in app.schedules
                ],
                "pid": os.getpid(),
                "metrics": metrics_url,
            },
            compact=True,
        )
    else:
        consumers = ", ".join(
            f"{spec.queue} → {handlers.get(spec.queue, spec.name)}"
            f" (batch {spec.max_batch_size}, concurrency {spec.max_concurrency or 'auto'}"
            + (f", dlq {spec.dead_letter_queue})" if spec.dead_letter_queue else ")")
            for spec in app.consumers
        )
        schedules = ", ".join(f"{schedule.name} → {schedule.queue}" for schedule in app.schedules)
        out().print(
            f"conveyor worker · engine {app.url} · queues: {', '.join(sorted(queues))} · "
            f"consumers: {consumers or 'none'} · "
            + (f"schedules: {schedules} · " if schedules else "")
            + f"pid {os.getpid()} · "
            + (f"metrics {metrics_url} · " if metrics_url else "")
            + "Ctrl-C or SIGTERM stops",
            markup=False,
            soft_wrap=True,
        )
    sys.stdout.flush()
