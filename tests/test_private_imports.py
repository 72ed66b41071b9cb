"""scripts/check_private_imports.py, which `make test` runs, finds a private name imported from
another module and passes this repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_private_imports.py"


def check(*folders: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, folders)], capture_output=True, text=True, check=False
    )


def test_a_private_name_imported_from_another_module_is_reported(tmp_path: Path) -> None:
    (tmp_path / "fine.py").write_text("from __future__ import annotations\nfrom os import path\n")
    (tmp_path / "leak.py").write_text("from conveyor.core.core import _private\nimport a._hidden\n")
    completed = check(tmp_path)
    assert completed.returncode == 1
    assert "leak.py:1: imports '_private'" in completed.stdout
    assert "leak.py:2: imports the private module 'a._hidden'" in completed.stdout
    assert "fine.py" not in completed.stdout


def test_this_repository_imports_no_private_names() -> None:
    completed = check(ROOT / "conveyor", ROOT / "tests", ROOT / "bench", ROOT / "examples")
    assert completed.returncode == 0, completed.stdout
