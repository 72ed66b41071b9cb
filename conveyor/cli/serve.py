"""`conveyor serve`: the HTTP API and the dashboard on uvicorn, until SIGTERM or Ctrl-C.

Without a token only a loopback bind is allowed: anything else would hand every queue to the
network. The token is never printed or logged. The port is bound first: a port in use is one
error line before anything (a database file included) is created.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from typing import Annotated, Any

import typer

from conveyor.app import App
from conveyor.cli.interrupt import Terminated, raise_terminated, stopped
from conveyor.cli.logs import LOG_FORMAT_HELP, LogFormat, LogLevel, configure_logging
from conveyor.cli.output import CommandError, emit_json, out
from conveyor.cli.state import CliState, current
from conveyor.errors import MissingDependency

TOKEN_ENV_VAR = "CONVEYOR_TOKEN"
# How often the banner looks whether uvicorn has started.
STARTED_POLL_SECONDS = 0.01
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
# The same defaults as conveyor/http/body.py and conveyor/http/server.py (imported lazily there).
DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0

log = logging.getLogger("conveyor.serve")


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
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A Host name clients use to reach this server (repeatable): besides the loopback "
            "names, only these are answered, against DNS rebinding. '.example.com' takes a domain "
            "and its subdomains; '*' any name (only with a token).",
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log one line per request (never the query string).")
    ] = False,
    body_timeout: Annotated[
        float,
        typer.Option("--body-timeout", min=0.001, help="Seconds a request body may take to arrive (408)."),
    ] = DEFAULT_BODY_TIMEOUT_SECONDS,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout", min=0.001, help="Seconds a connection may take to send request headers."
        ),
    ] = DEFAULT_HEADER_TIMEOUT_SECONDS,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level on stderr.")] = LogLevel.info,
    log_format: Annotated[LogFormat, typer.Option("--log-format", help=LOG_FORMAT_HELP)] = LogFormat.text,
) -> None:
    """Serve the HTTP API (Cloudflare Queues' shape) and the dashboard; see docs/http.md."""
    _require_http_extra()
    from conveyor.http.hosts import is_loopback

    token = token or None
    if token is None and not is_loopback(host):
        raise CommandError(
            f"refusing to serve on {host} without a token: set ${TOKEN_ENV_VAR} (or --token); "
            "only 127.0.0.1, ::1 and localhost may run without one",
            code="token_required",
        )
    names = _allowed_hosts(host, allowed_hosts or [], authenticated=token is not None)
    sock = _bind(host, port)  # before anything else: a taken port creates nothing
    options = _Options(token, names, access_log, body_timeout, header_timeout, log_level, log_format)
    previous = signal.signal(signal.SIGTERM, raise_terminated)  # SIGTERM stops as Ctrl-C does
    stopped_by: int | None = None
    try:
        _run(current(), sock, options)
    except Terminated:
        stopped_by = signal.SIGTERM
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    stopped("conveyor serve", stopped_by)


class _Options:
    def __init__(
        self,
        token: str | None,
        allowed_hosts: list[str],
        access_log: bool,
        body_timeout: float,
        header_timeout: float,
        log_level: LogLevel,
        log_format: LogFormat,
    ) -> None:
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.access_log = access_log
        self.body_timeout = body_timeout
        self.header_timeout = header_timeout
        self.log_level = log_level
        self.log_format = log_format


def _allowed_hosts(host: str, allowed: list[str], *, authenticated: bool) -> list[str]:
    """The Host names to answer besides the loopback ones: the bind address and `--allowed-host`."""
    from conveyor.http.hosts import ANY_HOST, HostPolicy, is_loopback, is_wildcard

    if ANY_HOST in allowed and not authenticated:
        raise CommandError(
            f"--allowed-host '{ANY_HOST}' needs a token: without one, any web page could reach the "
            "server through DNS rebinding",
            code="token_required",
        )
    if is_wildcard(host) and not allowed:
        raise CommandError(
            f"{host} listens on every interface: name the hosts clients call it by with "
            f"--allowed-host NAME (repeatable; '{ANY_HOST}' for any)",
            code="allowed_host_required",
        )
    names = list(allowed)
    if not is_loopback(host) and not is_wildcard(host):
        names.append(host)
    try:
        HostPolicy(names)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return names


def _bind(host: str, port: int) -> socket.socket:
    from conveyor.http.server import bind

    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} on {host} is in use: stop what holds it or choose --port", code="port_in_use"
            ) from None
        reason = exc.strerror or str(exc)
        raise CommandError(f"cannot listen on {host}:{port}: {reason}", code="bind_failed") from None


def _require_http_extra() -> None:
    try:
        import uvicorn  # noqa: F401

        import conveyor.http  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"conveyor serve needs the 'http' extra: pip install 'conveyor[http]' ({exc})"
        ) from exc


def _run(state: CliState, sock: socket.socket, options: _Options) -> None:
    from conveyor.http import create_api
    from conveyor.http.hosts import HostPolicy
    from conveyor.http.server import make_server

    configure_logging(options.log_level, options.log_format)
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
            api = create_api(
                app,
                token=options.token,
                allowed_hosts=options.allowed_hosts,
                dead_letter_queues=declared,
                body_timeout_seconds=options.body_timeout,
                access_log=options.access_log,
            )
            server = make_server(
                api, log_level=options.log_level.value, header_timeout=options.header_timeout
            )
            address = _address(sock)
            hosts = HostPolicy(options.allowed_hosts).describe()
            log.info("listening on %s (answering the hosts: %s)", address, hosts)
            announce = asyncio.create_task(_announce(server, state, app, address, options.token is not None))
            try:
                await server.serve(sockets=[sock])
            finally:
                announce.cancel()

    asyncio.run(main())


async def _announce(server: Any, state: CliState, app: App, address: str, authenticated: bool) -> None:
    """The banner, once the server has started: by then uvicorn handles Ctrl-C and SIGTERM itself."""
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(STARTED_POLL_SECONDS)
    _banner(state, app, address, authenticated)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _banner(state: CliState, app: App, address: str, authenticated: bool) -> None:
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
