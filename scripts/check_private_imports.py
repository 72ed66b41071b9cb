"""No module imports another module's private name (`from a.b import _c`, or a private module
`a._b`): what is private stays with its module. import-linter cannot say this, so `make test`
runs this check too. Usage: python scripts/check_private_imports.py DIR..."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if node.level == 0 and module == "__future__":
                continue
            modules = module.split(".") if module else []
            for name in [*modules, *names]:
                if private(name):
                    yield f"{path}:{node.lineno}: imports {name!r} from {'.' * node.level}{module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(private(part) for part in alias.name.split(".")):
                    yield f"{path}:{node.lineno}: imports the private module {alias.name!r}"


def main(folders: list[str]) -> int:
    found = [
        line for folder in folders for path in sorted(Path(folder).rglob("*.py")) for line in violations(path)
    ]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["conveyor", "tests", "bench", "examples", "scripts"]))
