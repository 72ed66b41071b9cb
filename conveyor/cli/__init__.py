"""The `conveyor` command.

Each command lives in its own module with a `register(cli)` function; adding a command is one
module plus one entry in COMMANDS. Commands call the public API (App, Queue) through
`conveyor.cli.state.run`, and raise exceptions freely: the root group prints them as one line.
"""

from __future__ import annotations

import typer

from conveyor.cli import demo_and_bench, init_config, messages, queues, send, serve, top, topics, worker
from conveyor.cli.state import ConveyorGroup, global_options

COMMANDS = (queues, topics, send, messages, worker, serve, top, init_config, demo_and_bench)

app = typer.Typer(
    name="conveyor",
    cls=ConveyorGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # errors are reported by ConveyorGroup, tracebacks with --debug
    rich_markup_mode="rich",
)
app.callback()(global_options)
for command in COMMANDS:
    command.register(app)


def main() -> None:
    app(prog_name="conveyor")


__all__ = ["app", "main"]
