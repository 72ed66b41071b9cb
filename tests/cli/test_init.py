from __future__ import annotations

import re
from pathlib import Path

from conveyor.cli.config import load_config, parse_config
from tests.cli.conftest import Cli, assert_one_error_line


def test_init_writes_a_valid_commented_config(cli: Cli, tmp_path: Path) -> None:
    result = cli.ok("init")
    assert "Wrote conveyor.toml" in result.stdout
    path = tmp_path / "conveyor.toml"
    assert path.read_text().startswith("# conveyor.toml")
    config = load_config(path)
    assert [queue.name for queue in config.queues] == ["jobs", "jobs-dlq"]
    assert config.consumers == []


def test_the_commented_consumer_and_metrics_are_valid_once_uncommented(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    text = (tmp_path / "conveyor.toml").read_text()
    head, _, tail = text.partition("# [[consumers]]")
    # the commented keys and tables, not the prose around them
    settings = re.compile(r"# (\[|\w+ = )")
    lines = [line[2:] if settings.match(line) else line for line in tail.splitlines()]
    config = parse_config(head + "[[consumers]]" + "\n".join(lines))
    [consumer] = config.consumers
    assert (consumer.queue, consumer.handler, consumer.dead_letter_queue) == (
        "jobs",
        "handlers:handle",
        "jobs-dlq",
    )
    assert (config.metrics.port, config.metrics.host) == (9464, "127.0.0.1")


def test_the_commented_topic_is_valid_once_uncommented(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    text = (tmp_path / "conveyor.toml").read_text()
    head, _, tail = text.partition("# [[topics]]")
    block, _, _ = tail.partition("\n\n")
    uncommented = head + "[[topics]]" + "\n".join(line.removeprefix("# ") for line in block.splitlines())
    [topic] = parse_config(uncommented).topics
    assert topic.name == "orders"
    assert [(s.queue, s.types) for s in topic.subscriptions] == [("jobs", ["ORDER_PLACED"])]


def test_the_commented_schedule_is_valid_once_uncommented(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    text = (tmp_path / "conveyor.toml").read_text()
    head, _, tail = text.partition("# [[schedules]]")
    block, _, _ = tail.partition("\n\n")
    uncommented = head + "[[schedules]]" + "\n".join(line.removeprefix("# ") for line in block.splitlines())
    [schedule] = parse_config(uncommented).schedules
    assert (schedule.queue, schedule.cron, schedule.tz, schedule.body) == (
        "jobs",
        "*/5 * * * *",
        "UTC",
        {"task": "report"},
    )


def test_init_refuses_to_overwrite_without_force(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "conveyor.toml"
    path.write_text("# mine\n")
    assert_one_error_line(cli("init"), "conveyor.toml already exists", "--force")
    assert path.read_text() == "# mine\n"
    assert cli.json("init", "--force") == {"path": "conveyor.toml", "written": True}
    assert path.read_text().startswith("# conveyor.toml")


def test_init_writes_to_the_config_path(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    cli.ok("--config", "deploy/conveyor.toml", "init")
    assert (tmp_path / "deploy" / "conveyor.toml").exists()
