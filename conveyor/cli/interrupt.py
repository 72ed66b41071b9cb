"""How a command ends on a signal: SIGTERM stops it gracefully with exit code 0 (what a supervisor
asks for); Ctrl-C (SIGINT) stops it the same way, then exits 130, the shell's code for an
interrupted program, after one line and no traceback."""

from __future__ import annotations

import os
import signal
from types import FrameType

import typer

from conveyor.cli.output import emit_json, out
from conveyor.cli.state import current
from conveyor.processes import INTERRUPTED_EXIT_CODE


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler a long-running command installs (unwinds as Ctrl-C does)."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def stopped(command: str, signum: int | None) -> None:
    """The one line a long-running command ends with; exit 130 after Ctrl-C."""
    interrupted = signum == signal.SIGINT
    if current().json:
        document: dict[str, object] = {"event": "stopped", "pid": os.getpid()}
        if signum is not None:
            document["signal"] = signal.Signals(signum).name
        emit_json(document, compact=True)
    else:
        out().print(f"{command} stopped{' (Ctrl-C)' if interrupted else ''}.", markup=False)
    if interrupted:
        raise typer.Exit(INTERRUPTED_EXIT_CODE)
