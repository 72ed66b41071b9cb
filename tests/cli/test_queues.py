from __future__ import annotations

import json

import pytest

import conveyor
from tests.cli.conftest import Cli, assert_one_error_line


def test_create_then_list_shows_the_queue_in_a_table(cli: Cli) -> None:
    created = cli.ok("queues", "create", "jobs")
    assert "Created queue 'jobs'" in created.stdout
    listing = cli.ok("queues", "list").stdout
    for column in ("queue", "backlog", "delayed", "in flight", "oldest", "bytes", "paused"):
        assert column in listing
    assert "jobs" in listing


def test_list_json_has_the_counts_of_every_queue(cli: Cli) -> None:
    cli.ok("queues", "create", "a")
    cli.ok("queues", "create", "b")
    cli.ok("send", "a", '{"n": 1}')
    cli.ok("send", "a", '{"n": 2}', "--delay", "1h")
    rows = {row["name"]: row for row in cli.json("queues", "list")}
    assert set(rows) == {"a", "b"}
    assert (rows["a"]["backlog"], rows["a"]["delayed"], rows["a"]["in_flight"]) == (1, 1, 0)
    assert rows["a"]["bytes"] == len(b'{"n":1}') + len(b'{"n":2}')
    assert rows["b"]["backlog"] == 0 and rows["b"]["paused"] is False


def test_create_takes_settings_as_seconds_or_durations(cli: Cli) -> None:
    info = cli.json("queues", "create", "slow", "--delivery-delay", "30", "--retention", "2d")
    assert info["delivery_delay"] == 30
    assert info["retention_seconds"] == 2 * 86_400


def test_the_dedup_window_is_set_at_create_and_update(cli: Cli) -> None:
    assert cli.json("queues", "create", "jobs", "--dedup-window", "1m")["dedup_window_seconds"] == 60
    assert cli.json("queues", "update", "jobs", "--dedup-window", "0")["dedup_window_seconds"] == 0
    assert "dedup window" in cli.ok("queues", "info", "jobs").stdout


def test_create_of_an_existing_queue_is_an_error(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    assert_one_error_line(cli("queues", "create", "jobs"), "already exists", "[queue_already_exists]")


def test_create_with_an_out_of_range_setting_names_the_limit(cli: Cli) -> None:
    result = cli("queues", "create", "jobs", "--retention", "10")
    assert_one_error_line(result, "retention_seconds", "[limit_exceeded]")
    assert cli.json("queues", "list") == []


def test_a_bad_duration_is_a_usage_error(cli: Cli) -> None:
    result = cli("queues", "create", "jobs", "--delivery-delay", "soon")
    assert result.exit_code == 2
    assert "not a duration" in result.output


def test_invalid_queue_name_is_a_clear_error(cli: Cli) -> None:
    assert_one_error_line(cli("queues", "create", "no spaces"), "invalid queue name")


def test_info_shows_counts_and_settings(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs", "--delivery-delay", "5m")
    cli.ok("send", "jobs", "[1, 2]")
    text = cli.ok("queues", "info", "jobs").stdout
    assert "delivery delay" in text and "5m" in text
    info = cli.json("queues", "info", "jobs")
    assert info["name"] == "jobs"
    assert info["delayed"] == 1  # the queue's delivery delay applies
    assert info["delivery_delay"] == 300


def test_info_on_an_unknown_queue_fails_with_one_line(cli: Cli) -> None:
    assert_one_error_line(cli("queues", "info", "nope"), "queue 'nope' does not exist", "[queue_not_found]")


def test_unknown_queue_error_in_json_mode_is_a_json_document(cli: Cli) -> None:
    result = cli("--json", "queues", "info", "nope")
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == "queue_not_found"


def test_update_changes_only_the_given_setting(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs", "--retention", "1d")
    info = cli.json("queues", "update", "jobs", "--delivery-delay", "10")
    assert (info["delivery_delay"], info["retention_seconds"]) == (10, 86_400)


def test_update_without_settings_is_a_usage_error(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli("queues", "update", "jobs")
    assert result.exit_code == 2


def test_delete_asks_first_and_keeps_the_queue_on_no(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli("queues", "delete", "jobs", input="n\n")
    assert result.exit_code == 1
    assert "Delete queue 'jobs'" in result.stderr
    assert [q["name"] for q in cli.json("queues", "list")] == ["jobs"]


def test_delete_on_yes_or_with_force(cli: Cli) -> None:
    cli.ok("queues", "create", "a")
    cli.ok("queues", "create", "b")
    cli.ok("send", "a", "1")
    assert "Deleted queue 'a' (1 message(s))" in cli.ok("queues", "delete", "a", input="y\n").stdout
    assert cli.json("queues", "delete", "b", "--force") == {"name": "b", "deleted": True, "messages": 0}
    assert cli.json("queues", "list") == []


def test_delete_unknown_queue_is_an_error(cli: Cli) -> None:
    assert_one_error_line(cli("queues", "delete", "nope", "--force"), "[queue_not_found]")


def test_purge_removes_messages_and_keeps_the_queue(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "1")
    cli.ok("send", "jobs", "2")
    assert cli("queues", "purge", "jobs", input="n\n").exit_code == 1
    assert cli.json("queues", "purge", "jobs", "--force") == {"name": "jobs", "purged": 2}
    assert cli.json("queues", "info", "jobs")["backlog"] == 0


def test_pause_and_resume_delivery(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    assert "Paused delivery on 'jobs'" in cli.ok("queues", "pause-delivery", "jobs").stdout
    assert cli.json("queues", "info", "jobs")["paused"] is True
    assert "paused" in cli.ok("queues", "list").stdout

    async def pull(app: conveyor.App) -> None:
        await app.queue("jobs").pull()

    with pytest.raises(conveyor.QueuePaused):
        cli.api(pull)
    assert cli.json("queues", "resume-delivery", "jobs") == {"name": "jobs", "paused": False}
    assert cli.json("queues", "info", "jobs")["paused"] is False


def test_pause_unknown_queue_is_an_error(cli: Cli) -> None:
    assert_one_error_line(cli("queues", "pause-delivery", "nope"), "[queue_not_found]")


def test_list_with_no_queues_says_so(cli: Cli) -> None:
    assert "No queues yet" in cli.ok("queues", "list").stdout


def test_an_http_pull_consumer_is_added_shown_and_removed_with_wranglers_flags(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    added = cli.ok(
        "queues",
        "consumer",
        "http",
        "add",
        "jobs",
        "--batch-size",
        "20",
        "--message-retries",
        "2",
        "--retry-delay-secs",
        "10",
        "--visibility-timeout-secs",
        "120",
        "--dead-letter-queue",
        "jobs-dlq",
    ).stdout
    assert "HTTP pull consumer of 'jobs'" in added and "dead-letter queue jobs-dlq" in added
    stored = cli.api(lambda app: app.get_queue("jobs")).settings.pull_consumer
    assert stored == conveyor.PullConsumer(20, 2, 10.0, 120.0, "jobs-dlq")
    assert cli.json("queues", "info", "jobs")["pull_consumer"] == {
        "batch_size": 20,
        "max_retries": 2,
        "retry_delay": 10.0,
        "visibility_timeout_ms": 120_000,
        "dead_letter_queue": "jobs-dlq",
    }
    assert "batch size 20, 2 retries" in cli.ok("queues", "info", "jobs").stdout
    assert "jobs-dlq" in [row["name"] for row in cli.json("queues", "list")]

    assert cli.json("queues", "consumer", "http", "remove", "jobs") == {"name": "jobs", "removed": True}
    assert cli.api(lambda app: app.get_queue("jobs")).settings.pull_consumer is None


def test_a_bad_pull_consumer_setting_names_the_limit_and_changes_nothing(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli("queues", "consumer", "http", "add", "jobs", "--message-retries", "101")
    assert_one_error_line(result, "max_retries", "[limit_exceeded]")
    assert cli.api(lambda app: app.get_queue("jobs")).settings.pull_consumer is None
    missing = cli("queues", "consumer", "http", "add", "ghost", "--dead-letter-queue", "ghost-dlq")
    assert_one_error_line(missing, "ghost", "[queue_not_found]")
    assert cli.json("queues", "list") == [cli.json("queues", "info", "jobs")]
