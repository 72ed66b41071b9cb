"""One loader for the engines' named SQL and Lua: each engine keeps its statements or scripts in
one file beside its code, every one opened by a `-- name: <name>` line, read once at import."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load_named(package: str, filename: str) -> dict[str, str]:
    """name -> text of every named section of `filename` in `package`, without a final ";" (what
    precedes the first name is a comment for readers and is dropped)."""
    text = resources.files(package).joinpath(filename).read_text()
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}
