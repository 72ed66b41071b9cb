"""`conveyor worker --metrics-port/--metrics-host`: where the worker serves its Prometheus
metrics, the options winning over conveyor.toml's `[metrics]`."""

from __future__ import annotations

import typer

from conveyor import limits as L
from conveyor.cli.config import ConveyorConfig

PORT = typer.Option(
    "--metrics-port",
    min=0,
    max=L.MAX_PORT,
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (9464 is the usual port; default: "
    "conveyor.toml's [metrics] port, else off).",
    show_default=False,
)
HOST = typer.Option(
    "--metrics-host",
    metavar="HOST",
    help=f"The address the metrics endpoint listens on (default: conveyor.toml's [metrics] host, "
    f"else {L.DEFAULT_METRICS_HOST}: this machine only; 0.0.0.0 for every interface).",
    show_default=False,
)


def served(config: ConveyorConfig | None, port: int | None, host: str | None) -> tuple[int | None, str]:
    """Where to serve: the options, else conveyor.toml's `[metrics]`; port None is off."""
    if config is not None:
        port = config.metrics.port if port is None else port
        host = config.metrics.host if host is None else host
    return port, host or L.DEFAULT_METRICS_HOST
