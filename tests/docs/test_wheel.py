"""A user's view of the built wheel: it ships `py.typed`, and `mypy --strict` on a file using the
public API passes after installing it into a fresh virtualenv (offline: no dependency resolution,
the dependencies come from this environment)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

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


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: hatchling comes from the dev extra, so the build needs no network
    built = run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", out, REPO, cwd=out,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("conveyor-*.whl")
    return path


def test_the_wheel_ships_py_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "conveyor/py.typed" in names
    assert "conveyor/__init__.py" in names


@pytest.mark.slow
def test_mypy_strict_passes_on_a_user_file_against_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
        wheel, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    # the dependencies (pydantic, typer, ...) and mypy itself come from this environment, appended
    # after the fresh venv's own site-packages, so `conveyor` resolves to the wheel, not the checkout
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    fresh_site = Path(purelib.stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run(python, "-c", "import conveyor; print(conveyor.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(fresh_site)), where

    (tmp_path / "user.py").write_text(USER_FILE)
    checked = run(python, "-m", "mypy", "--strict", "--no-incremental", "user.py", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert run(python, "user.py", cwd=tmp_path).returncode == 0

    (tmp_path / "wrong.py").write_text(WRONG_FILE)
    checked = run(python, "-m", "mypy", "--strict", "--no-incremental", "wrong.py", cwd=tmp_path)
    assert checked.returncode == 1
    assert 'wrong.py:6: error: Incompatible types in assignment (expression has type "QueueStats"' in (
        checked.stdout
    )
