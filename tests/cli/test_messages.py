from __future__ import annotations

import base64

import conveyor
from conveyor.testing import drain
from tests.cli.conftest import Cli, assert_one_error_line


def dead_letter(cli: Cli, bodies: list[object]) -> None:
    """Send `bodies` to `jobs` and let a consumer that always fails move them to `jobs-dlq`."""

    async def work(app: conveyor.App) -> None:
        @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq", max_batch_timeout=0)
        async def fail(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            raise RuntimeError("the [payment] service is down")

        await app.queue("jobs").send_batch(bodies)
        await drain(app)

    cli.api(work)


def test_peek_shows_attempts_age_and_body_preview(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", '{"type": "LINK_CLICK", "url": "https://x.io/[x]"}')
    text = cli.ok("messages", "peek", "jobs").stdout
    assert "attempts" in text and "age" in text
    assert '{"type":"LINK_CLICK","url":"https://x.io/[x]"}' in text


def test_peek_json_documents(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "[1]")
    cli.ok("send", "jobs", "ab", "-t", "bytes")
    first, second = cli.json("messages", "peek", "jobs", "-n", "5")
    assert (first["body"], first["content_type"], first["attempts"]) == ([1], "json", 0)
    assert first["dead_letter"] is None and first["leased"] is False
    assert first["timestamp_ms"] > 1_600_000_000_000
    assert (second["content_type"], base64.b64decode(second["body"])) == ("bytes", b"ab")


def test_peek_limit(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    for n in range(5):
        cli.ok("send", "jobs", str(n))
    assert [m["body"] for m in cli.json("messages", "peek", "jobs", "-n", "2")] == [0, 1]


def test_peek_dead_letters_shows_source_original_id_and_error(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    original = cli.json("send", "jobs", '{"order": 7}')["id"]
    dead_letter(cli, [])
    [message] = cli.json("messages", "peek", "jobs-dlq")
    assert message["body"] == {"order": 7}
    info = message["dead_letter"]
    assert (info["source_queue"], info["original_id"]) == ("jobs", original)
    assert "the [payment] service is down" in info["error"]
    table = cli.ok("messages", "peek", "jobs-dlq").stdout
    for text in ("body / dead letter", "from jobs after 1 attempt(s)", original, "[payment]"):
        assert text in table


def test_peek_empty_and_unknown_queues(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    assert "Queue 'jobs' is empty" in cli.ok("messages", "peek", "jobs").stdout
    assert cli.json("messages", "peek", "jobs") == []
    assert_one_error_line(cli("messages", "peek", "nope"), "[queue_not_found]")


def test_replay_moves_dead_letters_back_at_attempt_one(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    dead_letter(cli, [{"n": n} for n in range(5)])
    assert cli.json("queues", "info", "jobs-dlq")["backlog"] == 5
    result = cli.ok("messages", "replay", "jobs-dlq", "--to", "jobs")
    assert "Replayed 5 message(s) from 'jobs-dlq' to 'jobs'" in result.stdout
    moved = cli.json("messages", "peek", "jobs")
    assert sorted(m["body"]["n"] for m in moved) == list(range(5))
    assert {m["attempts"] for m in moved} == {0}  # the next delivery is attempt 1
    assert {m["dead_letter"] is None for m in moved} == {True}
    assert cli.json("queues", "info", "jobs-dlq")["backlog"] == 0


def test_replay_limit(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    dead_letter(cli, [1, 2, 3])
    assert cli.json("messages", "replay", "jobs-dlq", "--to", "jobs", "--limit", "2") == {
        "from": "jobs-dlq",
        "to": "jobs",
        "replayed": 2,
    }
    assert cli.json("queues", "info", "jobs-dlq")["backlog"] == 1


def test_replay_to_an_unknown_queue_is_an_error(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    dead_letter(cli, [1])
    assert_one_error_line(
        cli("messages", "replay", "jobs-dlq", "--to", "typo"), "queue 'typo' does not exist"
    )
    assert cli.json("queues", "info", "jobs-dlq")["backlog"] == 1


def test_replay_needs_to(cli: Cli) -> None:
    assert cli("messages", "replay", "jobs-dlq").exit_code == 2


def test_delete_one_message_by_id(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    doomed = cli.json("send", "jobs", '"doomed"')["id"]
    kept = cli.json("send", "jobs", '"kept"')["id"]
    assert f"Deleted message {doomed} from 'jobs'" in cli.ok("messages", "delete", "jobs", doomed).stdout
    assert [m["id"] for m in cli.json("messages", "peek", "jobs")] == [kept]
    assert_one_error_line(cli("messages", "delete", "jobs", doomed), "[message_not_found]")
    assert cli.json("messages", "delete", "jobs", kept) == {"queue": "jobs", "id": kept, "deleted": True}
    assert_one_error_line(cli("messages", "delete", "nope", kept), "[queue_not_found]")


def test_delete_a_leased_message_is_refused(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    held = cli.json("send", "jobs", '"held"')["id"]
    cli.api(lambda app: app.queue("jobs").pull(1))
    assert_one_error_line(cli("messages", "delete", "jobs", held), "[message_leased]")
    assert cli.json("queues", "info", "jobs")["in_flight"] == 1
