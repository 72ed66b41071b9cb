"""`conveyor bench` and `conveyor dev`: tools that live in a conveyor checkout, not in the package.

`bench/` and `examples/` are not installed with conveyor, so these commands import them from the
current directory (the checkout's root) and say so clearly anywhere else.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import typer

from conveyor.cli.output import CommandError

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _entry_point(module: str, what: str) -> Callable[[Sequence[str]], int]:
    root = str(Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise CommandError(
                f"{what} lives in a conveyor checkout: run this from the repository's root "
                f"(no {module.replace('.', '/')} here)",
                code="not_a_checkout",
            ) from None
        raise
    return cast(Callable[[Sequence[str]], int], loaded.main)


def bench(ctx: typer.Context) -> None:
    """Run the benchmarks (bench/): every figure next to its engine's raw ceiling. `--help` for options."""
    raise typer.Exit(_entry_point("bench", "the benchmark suite")(list(ctx.args)))


def dev(ctx: typer.Context) -> None:
    """Run the link-click demo (examples/linkclicks) on embedded SQLite. `--help` for options."""
    argv: list[Any] = list(ctx.args)
    raise typer.Exit(_entry_point("examples.linkclicks.__main__", "the link-click demo")(argv))


def register(cli: typer.Typer) -> None:
    cli.command("bench", context_settings=PASS_THROUGH)(bench)
    cli.command("dev", context_settings=PASS_THROUGH)(dev)
