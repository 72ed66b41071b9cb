"""`conveyor dev` (the link-click demo, conveyor/demo) and `conveyor bench` (the benchmark suite,
conveyor/bench): both ship with the package and take their own options (`--help`)."""

from __future__ import annotations

from typing import Any

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def bench(ctx: typer.Context) -> None:
    """Run the benchmarks: every figure next to its engine's raw ceiling. `--help` for options."""
    from conveyor.bench import main

    raise typer.Exit(main(list(ctx.args)))


def dev(ctx: typer.Context) -> None:
    """Run the link-click demo on embedded SQLite (needs conveyor\\[http]). `--help` for options."""
    from conveyor.demo.__main__ import main

    argv: list[Any] = list(ctx.args)
    raise typer.Exit(main(argv))


def register(cli: typer.Typer) -> None:
    cli.command("bench", context_settings=PASS_THROUGH)(bench)
    cli.command("dev", context_settings=PASS_THROUGH)(dev)
