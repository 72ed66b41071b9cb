"""The `conveyor` command.

Each command lives in its own module with a `register(cli)` function; adding a command is one
module plus one entry in COMMANDS. Commands call the public API (App, Queue) through
`conveyor.cli.state.run`, and raise exceptions freely: the root group prints them as one line.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.main

from conveyor.cli import (
    demo_and_bench,
    init_config,
    messages,
    queues,
    schedules,
    send,
    serve,
    top,
    topics,
    worker,
    workers,
)
from conveyor.cli.state import ConveyorGroup, global_options

COMMANDS = (
    queues,
    topics,
    send,
    messages,
    schedules,
    worker,
    workers,
    serve,
    top,
    init_config,
    demo_and_bench,
)

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


def root_command() -> Any:
    """The click command typer builds from `app`, with every flag shown without a type (typer
    labels them `<bool>`, which reads as if `--json` took a value)."""
    built = typer.main.get_command(app)
    _hide_flag_types(built)
    return built


def _hide_flag_types(command: Any) -> None:
    # typer brings its own copy of click: duck typing rather than isinstance
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer shows a metavar instead of the type; an empty one shows nothing
    make_help_option = command.get_help_option  # --help is made per context

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


def main() -> None:
    root_command()(prog_name="conveyor")


__all__ = ["app", "main", "root_command"]
