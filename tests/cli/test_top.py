from __future__ import annotations

from pathlib import Path

from conveyor.admin import Sample
from conveyor.cli.config import parse_config
from conveyor.cli.top import dead_letter_queues, rows
from conveyor.types import QueueInfo, QueueSettings, QueueStats
from tests.cli.conftest import Cli


def stats(name: str, backlog: int = 0, delayed: int = 0, in_flight: int = 0) -> QueueStats:
    return QueueStats(name, backlog, delayed, in_flight, 0.0, 0, False)


def test_once_renders_every_queue_with_its_dead_letter_count(cli: Cli) -> None:
    for name in ("jobs", "jobs-dlq", "other"):
        cli.ok("queues", "create", name)
    cli.ok("send", "jobs", "1")
    cli.ok("send", "jobs-dlq", "2")
    cli.ok("send", "jobs-dlq", "3")
    text = cli.ok("top", "--once").stdout
    for column in ("backlog", "in flight", "delayed", "DLQ", "send/s", "ack/s"):
        assert column in text
    jobs_line = next(line for line in text.splitlines() if "│ jobs " in line)
    assert jobs_line.split("│")[6].strip() == "2"  # DLQ size of jobs


def test_once_json(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("queues", "create", "jobs-dlq")
    cli.ok("send", "jobs", "1", "--delay", "60")
    document = cli.json("top", "--once")
    by_name = {row["name"]: row for row in document["queues"]}
    assert by_name["jobs"]["delayed"] == 1
    assert (by_name["jobs"]["dead_letter_queue"], by_name["jobs"]["dead_letters"]) == ("jobs-dlq", 0)
    assert by_name["jobs"]["send_rate"] is None  # one sample: no rate yet
    queue_keys = cli.json("queues", "info", "jobs").keys()
    assert queue_keys <= by_name["jobs"].keys()  # the queue's one document, with DLQ and rates


def test_dead_letter_queue_from_conveyor_toml_wins_over_the_naming_convention() -> None:
    config = parse_config('[[consumers]]\nqueue = "a"\nhandler = "h:f"\ndead_letter_queue = "failed"\n')
    names = ["a", "a-dlq", "failed", "b", "b-dlq", "c"]
    assert dead_letter_queues(names, config) == {"a": "failed", "b": "b-dlq"}


def test_rates_are_the_net_change_of_the_total_per_second() -> None:
    before = Sample(10.0, {"q": stats("q", backlog=10), "r": stats("r", backlog=50)})
    after = Sample(
        12.0, {"q": stats("q", backlog=20, in_flight=10), "r": stats("r", backlog=40), "new": stats("new")}
    )
    infos = {name: QueueInfo(name, QueueSettings(), False, 0.0) for name in after.stats}
    by_name = {row.stats.queue: row for row in rows(before, after, infos, {})}
    assert (by_name["q"].send_rate, by_name["q"].ack_rate) == (10.0, 0.0)
    assert (by_name["r"].send_rate, by_name["r"].ack_rate) == (0.0, 5.0)
    assert by_name["new"].send_rate is None


def test_top_reads_dead_letter_queues_from_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(
        '[[consumers]]\nqueue = "jobs"\nhandler = "h:f"\ndead_letter_queue = "failed"\n'
    )
    cli.ok("queues", "create", "jobs")
    cli.ok("queues", "create", "failed")
    cli.ok("send", "failed", "1")
    by_name = {row["name"]: row for row in cli.json("top", "--once")["queues"]}
    assert (by_name["jobs"]["dead_letter_queue"], by_name["jobs"]["dead_letters"]) == ("failed", 1)
