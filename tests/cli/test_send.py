from __future__ import annotations

import json
from pathlib import Path

import conveyor
from conveyor.cli.send import Line, batches
from conveyor.limits import Limits
from tests.cli.conftest import Cli, assert_one_error_line


def peeked(cli: Cli, queue: str, limit: int = 1000) -> list[conveyor.PeekedMessage]:
    async def peek(app: conveyor.App) -> list[conveyor.PeekedMessage]:
        return await app.queue(queue).peek(limit)

    return cli.api(peek)


def test_send_parses_body_as_json_and_prints_the_id(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli.json("send", "jobs", '{"type": "LINK_CLICK", "n": 1}')
    [message] = peeked(cli, "jobs")
    assert result == {"queue": "jobs", "id": message.id}
    assert message.body == {"type": "LINK_CLICK", "n": 1}
    assert message.content_type == "json"


def test_send_text_and_bytes(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "hello [world]", "--content-type", "text")
    cli.ok("send", "jobs", "raw", "-t", "bytes")
    bodies = [(m.content_type, m.body) for m in peeked(cli, "jobs")]
    assert bodies == [("text", "hello [world]"), ("bytes", b"raw")]


def test_send_from_stdin(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "-", input='{"from": "stdin"}\n')
    assert peeked(cli, "jobs")[0].body == {"from": "stdin"}


def test_send_with_delay_is_delayed(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "1", "--delay", "2m")
    info = cli.json("queues", "info", "jobs")
    assert (info["backlog"], info["delayed"]) == (0, 1)


def test_send_with_a_dedup_id_stores_once_and_prints_the_first_id(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    first = cli.json("send", "jobs", "1", "--dedup-id", "job-1")
    again = cli.json("send", "jobs", "2", "--dedup-id", "job-1")
    assert again == first
    assert [m.body for m in peeked(cli, "jobs")] == [1]
    assert_one_error_line(
        cli("send", "jobs", "3", "--dedup-id", "a b"), "invalid dedup_id", "[invalid_dedup_id]"
    )


def test_send_with_a_group_shows_it_on_peek_and_a_bad_one_is_refused(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "1", "--group", "user-42")
    assert [(m.body, m.group) for m in peeked(cli, "jobs")] == [(1, "user-42")]
    assert_one_error_line(cli("send", "jobs", "2", "--group", "a b"), "invalid group", "[invalid_group_id]")


def test_send_with_headers_stores_them_and_peek_shows_them(cli: Cli, tmp_path: Path) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "1", "--header", "tenant=acme", "-H", "query=a=b", "-H", "empty=")
    lines = tmp_path / "lines.jsonl"
    lines.write_text("2\n3\n")
    cli.ok("send", "jobs", "--file", str(lines), "-H", "batch=yes")
    assert [(m.body, m.headers) for m in peeked(cli, "jobs")] == [
        (1, {"tenant": "acme", "query": "a=b", "empty": ""}),
        (2, {"batch": "yes"}),
        (3, {"batch": "yes"}),
    ]
    shown = cli.json("messages", "peek", "jobs")
    assert [m["headers"] for m in shown] == [m.headers for m in peeked(cli, "jobs")]
    assert "tenant=acme" in cli.ok("messages", "peek", "jobs").output


def test_send_with_a_bad_header_is_an_error_that_sends_nothing(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    assert cli("send", "jobs", "1", "--header", "no-equals-sign").exit_code == 2
    too_long = "k" * 300 + "=v"
    assert_one_error_line(cli("send", "jobs", "1", "-H", too_long), "header key", "[invalid_headers]")
    assert peeked(cli, "jobs") == []


def test_send_invalid_json_is_a_clear_error_that_sends_nothing(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli("send", "jobs", "{not json")
    assert_one_error_line(result, "BODY is not valid JSON", "--content-type text", "[invalid_json]")
    assert peeked(cli, "jobs") == []


def test_send_to_an_unknown_queue_does_not_create_it(cli: Cli) -> None:
    assert_one_error_line(cli("send", "typo", "1"), "queue 'typo' does not exist")
    assert cli.json("queues", "list") == []


def test_send_needs_a_body_or_a_file(cli: Cli) -> None:
    assert cli("send", "jobs").exit_code == 2
    assert cli("send", "jobs", "1", "--file", "x.jsonl").exit_code == 2


def test_send_too_large_body_names_the_limit(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    result = cli("send", "jobs", "x" * 130_000, "-t", "text")
    assert_one_error_line(result, "130,000 bytes", "128,000", "[message_too_large]")


def test_send_file_sends_every_line_in_batches_with_a_summary(cli: Cli, tmp_path: Path) -> None:
    cli.ok("queues", "create", "jobs")
    lines = [json.dumps({"n": n}) for n in range(250)]
    (tmp_path / "messages.jsonl").write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    result = cli.ok("send", "jobs", "--file", "messages.jsonl")
    assert "Sent 250 message(s) to 'jobs' in 3 batch(es)" in result.stdout
    assert sorted(m.body["n"] for m in peeked(cli, "jobs")) == list(range(250))


def test_send_file_with_a_group_puts_every_line_in_it_in_file_order(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "--file", "-", "--group", "g", input="1\n2\n3\n")
    assert [(m.body, m.group) for m in peeked(cli, "jobs")] == [(1, "g"), (2, "g"), (3, "g")]

    async def pull_all(app: conveyor.App) -> list[object]:
        return [m.body for m in await app.queue("jobs").pull(batch_size=10)]

    assert cli.api(pull_all) == [1]  # one at a time: the rest wait for the first


def test_send_file_json_summary(cli: Cli, tmp_path: Path) -> None:
    cli.ok("queues", "create", "jobs")
    (tmp_path / "m.jsonl").write_text('"a"\n"b"\n')
    summary = cli.json("send", "jobs", "--file", "m.jsonl", "--delay", "5")
    assert (summary["queue"], summary["sent"], summary["batches"]) == ("jobs", 2, 1)
    assert cli.json("queues", "info", "jobs")["delayed"] == 2


def test_send_file_from_stdin_as_text(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    cli.ok("send", "jobs", "--file", "-", "-t", "text", input="first line\nsecond line\n")
    assert [m.body for m in peeked(cli, "jobs")] == ["first line", "second line"]


def test_send_file_with_a_bad_line_names_it_and_sends_nothing(cli: Cli, tmp_path: Path) -> None:
    cli.ok("queues", "create", "jobs")
    (tmp_path / "m.jsonl").write_text('{"ok": 1}\n{"ok": 2}\n{broken\n')
    assert_one_error_line(cli("send", "jobs", "--file", "m.jsonl"), "m.jsonl, line 3", "not valid JSON")
    assert peeked(cli, "jobs") == []


def test_send_missing_file_is_a_clear_error(cli: Cli) -> None:
    cli.ok("queues", "create", "jobs")
    assert_one_error_line(cli("send", "jobs", "--file", "absent.jsonl"), "cannot read absent.jsonl")


def test_batches_respect_the_byte_limit_as_well_as_the_count() -> None:
    limits = Limits()
    big = [Line(n, "x", 60_000) for n in range(10)]
    sizes = [len(batch) for batch in batches(big, limits)]
    assert sizes == [4, 4, 2]  # 4 x 60,000 fits in 256,000; 5 would not
    small = [Line(n, "x", 10) for n in range(230)]
    assert [len(batch) for batch in batches(small, limits)] == [100, 100, 30]


def test_send_file_of_large_lines_splits_by_bytes(cli: Cli, tmp_path: Path) -> None:
    cli.ok("queues", "create", "jobs")
    body = json.dumps("y" * 100_000)
    (tmp_path / "big.jsonl").write_text("\n".join([body] * 5) + "\n")
    summary = cli.json("send", "jobs", "--file", "big.jsonl")
    assert (summary["sent"], summary["batches"]) == (5, 3)
