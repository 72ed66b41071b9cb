"""`conveyor serve`: the HTTP API and the dashboard on uvicorn, until SIGTERM or Ctrl-C.

Without a token only a loopback bind is allowed: anything else would hand every queue to the
network. The token is never printed or logged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Annotated

import typer

from conveyor.app import App
from conveyor.cli.output import CommandError, emit_json, out
from conveyor.cli.state import CliState, current
from conveyor.cli.worker import LogLevel, configure_logging
from conveyor.errors import MissingDependency

TOKEN_ENV_VAR = "CONVEYOR_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


def register(cli: typer.Typer) -> None:
    cli.command("serve")(serve)


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs a token.")
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65_535, help="Port to bind (0: any free one).")
    ] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV_VAR,
            show_envvar=True,
            show_default=False,
            help="Bearer token every request must carry (all but /healthz). Prefer the env var: "
            "a command line is visible to other users of the machine.",
        ),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level on stderr.")] = LogLevel.info,
) -> None:
    """Serve the HTTP API (Cloudflare Queues' shape) and the dashboard; see docs/http.md."""
    _require_http_extra()
    from conveyor.http.auth import is_loopback

    token = token or None
    if token is None and not is_loopback(host):
        raise CommandError(
            f"refusing to serve on {host} without a token: set ${TOKEN_ENV_VAR} (or --token); "
            "only 127.0.0.1, ::1 and localhost may run without one",
            code="token_required",
        )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops as Ctrl-C does: app closed
    try:
        _run(current(), host, port, token, log_level)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if current().json:
        emit_json({"event": "stopped", "pid": os.getpid()}, compact=True)
    else:
        out().print("conveyor serve stopped.", markup=False)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _require_http_extra() -> None:
    try:
        import uvicorn  # noqa: F401

        import conveyor.http  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"conveyor serve needs the 'http' extra: pip install 'conveyor[http]' ({exc})"
        ) from exc


def _run(state: CliState, host: str, port: int, token: str | None, log_level: LogLevel) -> None:
    import uvicorn

    from conveyor.http import create_api

    configure_logging(log_level)
    config = state.config()
    declared: dict[str, str] = (
        {}
        if config is None
        else {
            consumer.queue: consumer.dead_letter_queue
            for consumer in config.consumers
            if consumer.dead_letter_queue is not None
        }
    )
    url = state.url()

    async def main() -> None:
        async with App(url, auto_create=False) as app:  # a typo in a queue name is a 404, not a new queue
            api = create_api(app, token=token, dead_letter_queues=declared)
            server = uvicorn.Server(
                uvicorn.Config(
                    api,
                    host=host,
                    port=port,
                    log_level=log_level.value,
                    server_header=False,
                    # uvicorn logs through the root logger (stderr): stdout stays the banner or --json
                    log_config=None,
                )
            )
            _banner(state, app, host, port, token is not None)
            await server.serve()

    asyncio.run(main())


def _banner(state: CliState, app: App, host: str, port: int, authenticated: bool) -> None:
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{port}"
    auth = "bearer token" if authenticated else "none (loopback only)"
    if state.json:
        emit_json(
            {
                "event": "started",
                "engine": app.url,
                "address": address,
                "auth": authenticated,
                "pid": os.getpid(),
            },
            compact=True,
        )
    else:
        out().print(
            f"conveyor serve · engine {app.url} · {address} (dashboard at /, API under /queues) · "
            f"auth: {auth} · pid {os.getpid()} · Ctrl-C or SIGTERM stops",
            markup=False,
            soft_wrap=True,
        )
    sys.stdout.flush()
