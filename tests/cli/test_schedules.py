"""`conveyor schedules list` and `[[schedules]]` in conveyor.toml: what a worker would run, with
the next runs of each; a schedule-only worker sends its ticks."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from pathlib import Path

from tests.cli.conftest import Cli, assert_one_error_line
from tests.cli.test_worker import handled, write_handlers

SCHEDULES = """
[[schedules]]
queue = "reports"
cron = "0 9 * * 1-5"
tz = "Europe/Paris"
body = { report = "sales" }

[[schedules]]
queue = "ticks"
every = "1h"
name = "hourly"
"""


def test_schedules_list_shows_each_schedule_with_its_next_runs(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(f'url = "{cli.url}"\n' + SCHEDULES)
    reports, hourly = cli.json("schedules", "list", "-n", "3")
    assert (reports["name"], reports["queue"], reports["cron"], reports["tz"]) == (
        "reports/0_9_*_*_1-5",
        "reports",
        "0 9 * * 1-5",
        "Europe/Paris",
    )
    assert reports["body"] == {"report": "sales"}
    runs = [datetime.fromisoformat(run) for run in reports["next_runs"]]
    assert len(runs) == 3
    assert all((run.hour, run.minute) == (9, 0) and run.weekday() < 5 for run in runs)  # Paris time
    assert (hourly["name"], hourly["every_seconds"], hourly["catch_up_seconds"]) == ("hourly", 3600, 60)
    ticks = [datetime.fromisoformat(run).timestamp() for run in hourly["next_runs_utc"]]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [3600, 3600]
    assert ticks[0] % 3600 == 0
    table = cli("schedules", "list", url=False).stdout
    for text in ("Schedules", "reports/0_9_*_*_1-5", "0 9 * * 1-5", "Europe/Paris", "every 3600 s", "hourly"):
        assert text in table


def test_schedules_list_of_an_app_module(cli: Cli, tmp_path: Path) -> None:
    module = f"scheduled_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "import conveyor\napp = conveyor.App('memory://')\napp.schedule(every=30, queue='pings')\n"
    )
    [schedule] = cli.json("schedules", "list", f"{module}:app")
    assert (schedule["name"], schedule["queue"]) == ("pings/every-30s", "pings")
    assert len(schedule["next_runs"]) == 3


def test_a_bad_schedule_in_conveyor_toml_is_one_error_line_naming_it(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text('[[schedules]]\nqueue = "r"\ncron = "61 * * * *"\n')
    assert_one_error_line(
        cli("schedules", "list", url=False), "conveyor.toml: schedules[0]: invalid cron expression"
    )
    (tmp_path / "conveyor.toml").write_text('[[schedules]]\nqueue = "r"\nevry = 5\n')
    assert_one_error_line(
        cli("schedules", "list", url=False), "schedules[0].evry: unknown key 'evry' — did you mean 'every'?"
    )
    (tmp_path / "conveyor.toml").write_text('[[schedules]]\nqueue = "r"\n')
    assert_one_error_line(cli("schedules", "list", url=False), "schedules[0]: a schedule takes cron or every")
    (tmp_path / "conveyor.toml").write_text('[[schedules]]\nqueue = "r"\nevery = 5\ntz = "Nowhere"\n')
    assert_one_error_line(cli("schedules", "list", url=False), "unknown time zone 'Nowhere'")


def test_a_worker_runs_the_schedules_of_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{cli.url}"\n'
        '[[schedules]]\nqueue = "jobs"\nevery = 1\nbody = "stop"\n'
        f'[[consumers]]\nqueue = "jobs"\nhandler = "{handlers}:handle"\nmax_batch_timeout = 0.05\n'
    )
    result = cli("worker", url=False)
    assert result.exit_code == 0, result.output
    assert "schedules: jobs/every-1s → jobs" in result.stdout.splitlines()[0]
    assert handled(tmp_path)[0] == "stop"
