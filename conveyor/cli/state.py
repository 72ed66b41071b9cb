"""What every command shares: the global options, the URL and config they resolve to, the root group
that turns exceptions into one error line, and `run()` to call the async API with an open App."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from conveyor import limits as L
from conveyor.app import App
from conveyor.cli.config import CONFIG_FILE, ConveyorConfig, load_config
from conveyor.cli.output import err, report_error
from conveyor.processes import INTERRUPTED_EXIT_CODE

T = TypeVar("T")

# Global options may also be written after the command (`conveyor queues list --json`): the root
# group moves them to the front before parsing.
GLOBAL_FLAGS = frozenset({"--json", "--debug"})
GLOBAL_VALUE_OPTIONS = frozenset({"--url", "--config"})


@dataclass
class CliState:
    url_option: str | None = None
    config_path: Path = Path(CONFIG_FILE)
    config_explicit: bool = False
    json: bool = False
    debug: bool = False
    _config: ConveyorConfig | None = field(default=None, repr=False)
    _config_loaded: bool = field(default=False, repr=False)

    def config(self) -> ConveyorConfig | None:
        """conveyor.toml, loaded on first use: None when there is none (and none was asked for)."""
        if not self._config_loaded:
            if self.config_explicit or self.config_path.exists():
                self._config = load_config(self.config_path)
            self._config_loaded = True
        return self._config

    def url(self) -> str:
        """--url, else CONVEYOR_URL (both arrive as url_option), else conveyor.toml, else the default."""
        if self.url_option:
            return self.url_option
        config = self.config()
        if config is not None and config.url:
            return config.url
        return L.DEFAULT_URL

    def config_folder(self) -> Path:
        return self.config_path.resolve().parent


# Set by the root callback for the command it runs (a context variable, so nothing leaks between runs).
_state: contextvars.ContextVar[CliState] = contextvars.ContextVar("conveyor_cli_state")


def current() -> CliState:
    """The global options of the running command."""
    return _state.get(None) or CliState()


def run(work: Callable[[App], Coroutine[Any, Any, T]]) -> T:
    """Open an App on the resolved URL, await `work(app)` and close it.

    The CLI never creates a queue by accident: a typo in a queue name is an error, not a new queue.
    """
    url = current().url()

    async def main() -> T:
        async with App(url, auto_create=False) as app:
            return await work(app)

    return asyncio.run(main())


def hoist_global_options(args: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS:
            front.append(arg)
        elif name in GLOBAL_VALUE_OPTIONS:
            front.append(arg)
            if "=" not in arg and index + 1 < len(args):
                front.append(args[index + 1])
                index += 1
        else:
            rest.append(arg)
        index += 1
    return front + rest


class ConveyorGroup(TyperGroup):
    """The root command group: global options anywhere, and every error as one line with exit code 1."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_global_options(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors (exit 2), --help, confirmations: typer reports them itself
        except KeyboardInterrupt:
            # Ctrl-C in any command: one line, the shell's code for an interrupted program
            err().print("Interrupted (Ctrl-C).", markup=False)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
        except Exception as exc:
            report_error(
                exc, as_json=bool(ctx.params.get("json_output")), debug=bool(ctx.params.get("debug"))
            )
            raise typer.Exit(1) from None


def global_options(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar=L.URL_ENV_VAR,
            help=f"Engine URL. Else ${L.URL_ENV_VAR}, else `url` in conveyor.toml, else {L.DEFAULT_URL}.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="CONVEYOR_CONFIG",
            help="The config file to read (default: ./conveyor.toml when it exists).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """conveyor: durable batched message queues — manage queues, send, inspect, replay, run workers."""
    _state.set(
        CliState(
            url_option=url,
            config_path=config or Path(CONFIG_FILE),
            config_explicit=config is not None,
            json=json_output,
            debug=debug,
        )
    )
