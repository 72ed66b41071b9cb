"""The shipped package stands alone. Built as a wheel (offline) and installed in a fresh virtual
environment: it ships `py.typed` and `mypy --strict` on a user's file passes against it (and catches
a type error), and `conveyor dev --once` and `conveyor bench --smoke` run in an empty directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Building, installing and each command: bounded, well above what they take.
STEP_TIMEOUT_SECONDS = 600

USER_FILE = '''
"""A user's program touching every part of the public API that a type checker should see."""

import asyncio
from typing import Annotated, Literal

import pydantic

import conveyor
from conveyor.testing import FakeClock, drain


class Resize(pydantic.BaseModel):
    type: Literal["RESIZE"]
    width: int


class Crop(pydantic.BaseModel):
    type: Literal["CROP"]


Job = Annotated[Resize | Crop, pydantic.Field(discriminator="type")]

app = conveyor.App("memory://", clock=FakeClock(), limits=conveyor.Limits(max_message_bytes=1_000))
router = conveyor.Router(Job)


@router.on(Resize)
async def resize(event: Resize, env: conveyor.Env) -> None:
    width: int = event.width
    assert width > 0


@router.on(Crop, batch=True)
async def crop(events: list[Crop], env: conveyor.Env) -> None:
    assert events


app.consumer("jobs", dead_letter_queue="jobs-dlq")(router)


@app.consumer("plain", max_batch_size=5, max_batch_timeout=0.1, max_retries=1)
async def plain(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    for message in batch.messages:
        attempts: int = message.attempts
        if attempts > 1:
            message.retry(delay_seconds=1.0)
    batch.ack_all()


async def main() -> None:
    async with app:
        jobs: conveyor.Queue = app.queue("jobs", schema=Job)
        message_id: str = await jobs.send({"type": "RESIZE", "width": 10})
        ids: list[str] = await jobs.send_batch([conveyor.SendRequest({"type": "CROP"}, delay_seconds=0)])
        stats: conveyor.QueueStats = await jobs.stats()
        info: conveyor.QueueInfo = await app.create_queue("other", retention_seconds=3_600)
        handled: int = await drain(app)
        peeked: list[conveyor.PeekedMessage] = await app.queue("jobs-dlq").peek(10)
        topic: conveyor.Topic = app.topic("events")
        subscription: conveyor.Subscription = await topic.subscribe("other", types=["RESIZE"])
        published: conveyor.PublishResult = await topic.publish({"type": "RESIZE", "width": 1})
        pulled: list[conveyor.PulledMessage] = await app.queue("other").pull(batch_size=5)
        acked: conveyor.AckResult = await app.queue("other").ack([m.lease_id for m in pulled])
        print(message_id, ids, stats.backlog, info.name, handled, peeked, subscription, published, acked)
    try:
        await app.queue("x").send("y" * 2_000)
    except conveyor.MessageTooLarge as error:
        print(error.limit, error.maximum)
    async with conveyor.EventBus() as bus, bus.subscribe("PING") as events:
        event: conveyor.Event = await bus.publish("PING", {"n": 1})
        print(event.id, events.pending)


asyncio.run(main())
'''

# A mistake the checker must catch: proof that the types come from the package, not from Any.
WRONG_FILE = """
import conveyor


async def main() -> None:
    stats: str = await conveyor.App("memory://").queue("q").stats()
"""


def run(
    args: list[str | Path], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )


def run_ok(
    args: list[str | Path], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    completed = run(args, cwd, env)
    assert completed.returncode == 0, f"{args}: {completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    return completed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout; --no-build-isolation: hatchling comes from the dev extra, so the
    build needs no network."""
    out = tmp_path_factory.mktemp("dist")
    run_ok(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            ROOT,
        ],
        out,
    )
    [path] = out.glob("conveyor-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (its dependencies are this test run's own, reached
    through a .pth file: nothing is downloaded); returns its bin folder."""
    place = tmp_path_factory.mktemp("venv")
    venv.create(place, with_pip=False)
    python = place / "bin" / "python"
    run_ok(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        place,
    )
    fresh = run_ok([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], place)
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    # Plain paths in a .pth file, after the venv's own site-packages: the dependencies (and mypy)
    # become importable while the .pth files there (the checkout's editable install) are not read,
    # so `conveyor` is the wheel, not the checkout.
    (Path(fresh.stdout.strip()) / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return place / "bin"


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "CONVEYOR_URL")}


def test_the_wheel_ships_py_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "conveyor/py.typed" in names
    assert "conveyor/__init__.py" in names


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    shown = run_ok([installed / "python", "-c", "import conveyor; print(conveyor.__file__)"], tmp_path)
    assert Path(shown.stdout.strip()).is_relative_to(installed.parent)


@pytest.mark.slow
def test_mypy_strict_passes_on_a_user_file_against_the_installed_wheel(
    installed: Path, tmp_path: Path
) -> None:
    python = installed / "python"
    (tmp_path / "user.py").write_text(USER_FILE)
    checked = run([python, "-m", "mypy", "--strict", "--no-incremental", "user.py"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    run_ok([python, "user.py"], tmp_path, clean_env())

    (tmp_path / "wrong.py").write_text(WRONG_FILE)
    checked = run([python, "-m", "mypy", "--strict", "--no-incremental", "wrong.py"], tmp_path)
    assert checked.returncode == 1
    assert 'wrong.py:6: error: Incompatible types in assignment (expression has type "QueueStats"' in (
        checked.stdout
    )


@pytest.mark.slow
def test_dev_once_runs_the_demo_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    completed = run_ok(
        [
            installed / "conveyor",
            "dev",
            "--once",
            "--port",
            "0",
            "--visits",
            "60",
            "--dir",
            tmp_path / "demo",
        ],
        tmp_path,
        clean_env(),
    )
    assert "clicks" in completed.stdout.lower()


@pytest.mark.slow
def test_bench_smoke_runs_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "latest.json"
    run_ok(
        [installed / "conveyor", "bench", "--smoke", "--engines", "memory,sqlite-normal", "--output", output],
        tmp_path,
        clean_env(),
    )
    sqlite = json.loads(output.read_text())["engines"]["sqlite-normal"]
    # the HTTP cases' server and load generator run from the wheel too
    assert {"send_one", "http_send_one", "http_pull_ack_small"} <= set(sqlite["cases"]), sqlite["notes"]
