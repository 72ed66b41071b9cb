"""mkdocs hooks (mkdocs.yml `hooks:`): the CLI reference page is generated from the CLI's own help
at build time, so it can never disagree with `conveyor --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

# docs/cli.md holds this line where the generated reference goes.
CLI_REFERENCE_MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """Every command's usage, arguments and options as Markdown, by typer's own `utils docs`."""
    generated = subprocess.run(
        [sys.executable, "-m", "typer", "conveyor.cli", "utils", "docs", "--name", "conveyor"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "100"},
    ).stdout
    # drop typer's page title: the page has its own
    return generated.split("\n", 1)[1].strip() + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if CLI_REFERENCE_MARKER in markdown:
        return markdown.replace(CLI_REFERENCE_MARKER, cli_reference())
    return markdown
