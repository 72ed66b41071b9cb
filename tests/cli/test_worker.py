"""`conveyor worker` in process. The handlers stop the worker the way an operator would: SIGTERM to
the process (the worker has installed its handler by the time a batch runs)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import conveyor
from tests.cli.conftest import Cli, assert_one_error_line

HANDLERS = """
import os
import signal
from pathlib import Path

OUT = Path(__file__).parent / "handled.txt"


async def handle(batch, env):
    with OUT.open("a") as out:
        for message in batch.messages:
            out.write(f"{message.body}\\n")
    if any(message.body == "stop" for message in batch.messages):
        os.kill(os.getpid(), signal.SIGTERM)
"""

APP_MODULE = """
import conveyor
from {handlers} import handle

app = conveyor.App()  # no URL: `conveyor worker --url` provides it through CONVEYOR_URL
app.consumer("jobs", max_batch_timeout=0.05)(handle)
not_an_app = 42
"""


def write_handlers(tmp_path: Path) -> str:
    """A handler module with a name unique to this test (modules are cached in sys.modules)."""
    name = f"handlers_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(HANDLERS)
    return name


def send_all(cli: Cli, queue: str, bodies: list[object]) -> None:
    async def send(app: conveyor.App) -> None:
        await app.queue(queue).send_batch(bodies)

    cli.api(send)


def handled(tmp_path: Path) -> list[str]:
    return sorted((tmp_path / "handled.txt").read_text().split())


def test_worker_runs_consumers_from_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{cli.url}"\n'
        '[[queues]]\nname = "jobs"\nretention_seconds = 7200\ndedup_window_seconds = 30\n'
        f'[[consumers]]\nqueue = "jobs"\nhandler = "{handlers}:handle"\nmax_batch_timeout = 0.05\n'
        'dead_letter_queue = "jobs-dlq"\n'
    )
    cli.ok("queues", "create", "jobs", "--retention", "1d")  # the worker updates it to match the file
    send_all(cli, "jobs", ["a", "b", "stop"])
    result = cli("worker", url=False)
    assert result.exit_code == 0, result.output
    banner = result.stdout.splitlines()[0]
    assert banner.startswith("conveyor worker · engine sqlite:///")
    assert "queues: jobs, jobs-dlq" in banner
    assert f"jobs → {handlers}:handle (batch 10, concurrency auto, dlq jobs-dlq)" in banner
    assert "conveyor worker stopped." in result.stdout
    assert handled(tmp_path) == ["a", "b", "stop"]
    info = cli.json("queues", "info", "jobs")
    assert (info["retention_seconds"], info["dedup_window_seconds"]) == (7200, 30)


def test_worker_makes_the_topic_subscriptions_of_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{cli.url}"\n'
        '[[topics]]\nname = "orders"\n'
        'subscriptions = [{ queue = "jobs", types = ["ORDER_UP"] }, { queue = "audit" }]\n'
        f'[[consumers]]\nqueue = "jobs"\nhandler = "{handlers}:handle"\nmax_batch_timeout = 0.05\n'
    )
    cli.ok("queues", "create", "jobs")
    send_all(cli, "jobs", ["stop"])
    result = cli("worker", url=False)
    assert result.exit_code == 0, result.output
    assert "queues: audit, jobs" in result.stdout.splitlines()[0]
    [topic] = cli.json("topics", "list")
    assert [(s["queue"], s["types"]) for s in topic["subscriptions"]] == [
        ("audit", None),
        ("jobs", ["ORDER_UP"]),
    ]
    published = cli.json("topics", "publish", "orders", '{"type": "ORDER_UP"}')
    assert sorted(published["ids"]) == ["audit", "jobs"]


def test_worker_runs_an_app_module_with_the_url_and_concurrency_given(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    module = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE.format(handlers=handlers))
    cli.ok("queues", "create", "jobs")
    send_all(cli, "jobs", [1, "stop"])
    result = cli("worker", f"{module}:app", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    assert f"jobs → {handlers}:handle (batch 10, concurrency 3)" in result.stdout
    assert f"engine {cli.url}" in result.stdout
    assert handled(tmp_path) == ["1", "stop"]


def test_worker_json_events(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    (tmp_path / "conveyor.toml").write_text(
        f'[[consumers]]\nqueue = "jobs"\nhandler = "{handlers}:handle"\nmax_batch_timeout = 0.05\n'
    )
    cli.ok("queues", "create", "jobs")
    send_all(cli, "jobs", ["stop"])
    result = cli("--json", "worker")
    assert result.exit_code == 0, result.output
    started, stopped = (json.loads(line) for line in result.stdout.splitlines())
    assert started["event"] == "started" and started["queues"] == ["jobs"]
    assert started["consumers"][0]["handler"] == f"{handlers}:handle"
    assert stopped["event"] == "stopped"


ORPHAN_APP = """
import conveyor

app = conveyor.App(auto_create=False)
app.consumer("jobs")(lambda batch, env: None)
app.consumer("orphan", dead_letter_queue="missing-dlq")(lambda batch, env: None)
"""


def test_worker_exits_1_naming_the_queue_when_a_consumer_dies_at_start_up(cli: Cli, tmp_path: Path) -> None:
    module = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(ORPHAN_APP)
    cli.ok("queues", "create", "jobs")
    cli.ok("queues", "create", "orphan")
    send_all(cli, "jobs", ["a", "b"])
    result = cli("worker", f"{module}:app")
    assert result.exit_code == 1, result.output
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert "queue 'missing-dlq' does not exist (the consumer of 'orphan' died of this" in error
    assert "conveyor worker stopped." not in result.stdout


def test_worker_with_nothing_to_run_explains_what_it_needs(cli: Cli) -> None:
    assert_one_error_line(cli("worker"), "nothing to run", "[no_consumers]")


def test_worker_with_an_unknown_module(cli: Cli) -> None:
    assert_one_error_line(cli("worker", "nosuchmodule:app"), "no module named 'nosuchmodule'")


def test_worker_with_an_attribute_that_is_not_an_app(cli: Cli, tmp_path: Path) -> None:
    module = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE.format(handlers=write_handlers(tmp_path)))
    assert_one_error_line(cli("worker", f"{module}:not_an_app"), "is not a conveyor.App (it is a 'int')")
    assert_one_error_line(cli("worker", f"{module}:missing"), "has no attribute 'missing'")


def test_worker_with_an_app_without_consumers(cli: Cli, tmp_path: Path) -> None:
    module = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("import conveyor\napp = conveyor.App()\n")
    assert_one_error_line(cli("worker", f"{module}:app"), "has no consumers")


def test_worker_with_a_bad_toml_key(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text('[[consumers]]\nqueue = "jobs"\nhandler = "h:f"\nretries = 3\n')
    assert_one_error_line(
        cli("worker"),
        "conveyor.toml: consumers[0].retries: unknown key 'retries' — did you mean 'max_retries'?",
    )


def test_worker_with_a_handler_that_cannot_be_imported(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text('[[consumers]]\nqueue = "jobs"\nhandler = "nosuch:handle"\n')
    assert_one_error_line(cli("worker"), "cannot import 'nosuch:handle'")


def test_worker_refuses_a_handler_of_the_wrong_signature_in_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    module = f"handlers_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("async def handle(batch):\n    pass\n")
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{cli.url}"\n[[consumers]]\nqueue = "jobs"\nhandler = "{module}:handle"\n'
    )
    result = cli("worker", url=False)
    assert_one_error_line(
        result, f"conveyor.toml: consumers[0].handler '{module}:handle'", "handler(batch, env)"
    )
