"""The API reference covers the public API: every name of `conveyor.__all__` (and of
`conveyor.testing`) has a `::: ` entry in docs/reference/ and a docstring of its own, as has every
public method and property; the CLI reference holds every command."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
import typer
from typer.core import TyperGroup

import conveyor
import conveyor.testing
from conveyor.cli import app as cli_app

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference"
PUBLIC = [("conveyor", name) for name in conveyor.__all__] + [
    ("conveyor.testing", name) for name in conveyor.testing.__all__
]


def documented_names() -> set[str]:
    entries: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        entries.update(re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.M))
    return entries


def own_docstring(obj: object) -> str | None:
    doc = getattr(obj, "__doc__", None)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
        return None  # the signature dataclasses write when the class has no docstring
    return doc


def undocumented_members(cls: type) -> list[str]:
    missing = []
    for attribute, value in vars(cls).items():
        if attribute.startswith("_"):
            continue
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(function) and not function.__doc__:
            missing.append(f"{cls.__name__}.{attribute}")
    return missing


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_is_in_the_reference_with_a_docstring(module: str, name: str) -> None:
    assert f"{module}.{name}" in documented_names(), f"add `::: {module}.{name}` to a page of docs/reference/"
    obj = getattr(importlib.import_module(module), name)
    assert own_docstring(obj), f"{module}.{name} has no docstring"
    if inspect.isclass(obj):
        assert undocumented_members(obj) == []


def test_the_reference_names_only_what_exists() -> None:
    for entry in documented_names():
        module, _, name = entry.rpartition(".")
        assert hasattr(importlib.import_module(module), name), entry


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def command_paths(group: TyperGroup, prefix: str) -> list[str]:
    paths = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        paths.append(f"{prefix} {name}")
        if isinstance(command, TyperGroup):
            paths.extend(command_paths(command, f"{prefix} {name}"))
    return paths


def test_the_cli_reference_is_generated_with_every_command() -> None:
    hooks = load_hooks()
    page = (REPO / "docs" / "cli.md").read_text()
    assert hooks.CLI_REFERENCE_MARKER in page
    generated = hooks.on_page_markdown(page, page=None)
    assert hooks.CLI_REFERENCE_MARKER not in generated
    root = typer.main.get_command(cli_app)
    assert isinstance(root, TyperGroup)
    for path in command_paths(root, "conveyor"):
        assert f"## `{path}`" in generated, path
    assert "--url" in generated and "--json" in generated
