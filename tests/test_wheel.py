"""The shipped package stands alone: built as a wheel and installed in a fresh virtual
environment, `conveyor dev --once` and `conveyor bench --smoke` run in an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Building, installing and both commands: bounded, well above what they take.
STEP_TIMEOUT_SECONDS = 600


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS, check=False
    )
    assert completed.returncode == 0, f"{args}: {completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout installed (its dependencies are this test
    run's own, reached through a .pth file: nothing is downloaded); returns its bin folder."""
    place = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(place), str(ROOT)], place)
    [wheel] = place.glob("conveyor-*.whl")
    environment = place / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], place)
    fresh = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], place)
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    # A plain path in a .pth file: the dependencies become importable, while the .pth files
    # there (the checkout's editable install) are not read.
    (Path(fresh.stdout.strip()) / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return environment / "bin"


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "CONVEYOR_URL")}


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    shown = run([str(installed / "python"), "-c", "import conveyor; print(conveyor.__file__)"], tmp_path)
    assert Path(shown.stdout.strip()).is_relative_to(installed.parent)


def test_dev_once_runs_the_demo_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    completed = run(
        [str(installed / "conveyor"), "dev", "--once", "--visits", "60", "--dir", str(tmp_path / "demo")],
        tmp_path,
        clean_env(),
    )
    assert "clicks" in completed.stdout.lower()


def test_bench_smoke_runs_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "latest.json"
    run(
        [
            str(installed / "conveyor"),
            "bench",
            "--smoke",
            "--engines",
            "memory,sqlite-normal",
            "--output",
            str(output),
        ],
        tmp_path,
        clean_env(),
    )
    assert output.exists()
