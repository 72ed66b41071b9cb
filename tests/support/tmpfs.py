"""A small tmpfs of the test's own, for full-disk tests: mounted under the test's directory,
resized to free space, unmounted afterwards. Skips with the reason where mounting is not possible
(not root, no mount(8), a container that forbids it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: "2m") at `path`."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let us mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def resize(path: Path, size: str) -> None:
    """Grow (or shrink) the tmpfs at `path`: how a full-disk test frees space."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], capture_output=True, check=True)
