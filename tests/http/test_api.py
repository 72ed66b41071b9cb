"""The HTTP API on every engine: what a client of Cloudflare Queues' HTTP API relies on."""

from __future__ import annotations

import base64
from typing import Any

import httpx

import conveyor
from conveyor import admin
from conveyor.testing import drain
from tests.http.conftest import client_for, error_code, result


async def create(client: httpx.AsyncClient, *names: str) -> None:
    for name in names:
        result(await client.post("/queues", json={"name": name}), 201)


async def queue(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    document: dict[str, Any] = result(await client.get(f"/queues/{name}"))
    return document


async def pull(client: httpx.AsyncClient, name: str, **options: int) -> list[dict[str, Any]]:
    pulled = result(await client.post(f"/queues/{name}/messages/pull", json=options))
    messages: list[dict[str, Any]] = pulled["messages"]
    return messages


async def test_send_pull_ack_round_trip(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    sent = result(await client.post("/queues/jobs/messages", json={"body": {"n": 1}}))
    result(await client.post("/queues/jobs/messages", json={"body": "hi", "content_type": "text"}))
    raw = base64.b64encode(b"\x00\xff").decode()
    result(await client.post("/queues/jobs/messages", json={"body": raw, "content_type": "bytes"}))

    pulled = result(await client.post("/queues/jobs/messages/pull", json={"batch_size": 2}))
    assert pulled["message_backlog_count"] == 3  # unacknowledged: ready, delayed or leased
    first, second = pulled["messages"]
    assert (first["id"], first["body"], first["content_type"]) == (sent["id"], {"n": 1}, "json")
    assert first["attempts"] == 1
    assert (second["body"], second["content_type"]) == ("hi", "text")
    assert isinstance(first["timestamp_ms"], int) and first["timestamp_ms"] > 1_600_000_000_000
    (third,) = await pull(client, "jobs")
    assert (third["body"], third["content_type"]) == (raw, "bytes")
    assert (await queue(client, "jobs"))["in_flight"] == 3

    leases = [{"lease_id": m["lease_id"]} for m in (first, second, third)]
    acked = result(await client.post("/queues/jobs/messages/ack", json={"acks": leases}))
    assert acked == {"ack_count": 3, "retry_count": 0, "dead_letter_count": 0, "warnings": []}
    assert await pull(client, "jobs") == []
    document = await queue(client, "jobs")
    assert (document["backlog"], document["in_flight"], document["delayed"]) == (0, 0, 0)


async def test_pull_with_no_body_takes_the_defaults(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    result(
        await client.post("/queues/jobs/messages/batch", json={"messages": [{"body": n} for n in range(7)]})
    )
    pulled = result(await client.post("/queues/jobs/messages/pull"))
    assert [m["body"] for m in pulled["messages"]] == [0, 1, 2, 3, 4]  # batch_size 5, oldest first
    assert pulled["message_backlog_count"] == 7


async def test_retry_redelivers_with_attempts_counted(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    result(await client.post("/queues/jobs/messages", json={"body": "again"}))
    (message,) = await pull(client, "jobs")
    retried = result(
        await client.post("/queues/jobs/messages/ack", json={"retries": [{"lease_id": message["lease_id"]}]})
    )
    assert retried == {"ack_count": 0, "retry_count": 1, "dead_letter_count": 0, "warnings": []}
    (again,) = await pull(client, "jobs")
    assert (again["id"], again["body"], again["attempts"]) == (message["id"], "again", 2)
    assert again["lease_id"] != message["lease_id"]


async def test_retry_with_a_delay_holds_the_message_back(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    (message,) = await pull(client, "jobs")
    retry = {"lease_id": message["lease_id"], "delay_seconds": 600}
    result(await client.post("/queues/jobs/messages/ack", json={"retries": [retry]}))
    assert await pull(client, "jobs") == []
    assert (await queue(client, "jobs"))["delayed"] == 1


async def test_an_unknown_or_spent_lease_is_a_warning(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    (message,) = await pull(client, "jobs")
    first = {"acks": [{"lease_id": message["lease_id"]}]}
    assert result(await client.post("/queues/jobs/messages/ack", json=first))["ack_count"] == 1

    again = {"acks": [{"lease_id": message["lease_id"]}], "retries": [{"lease_id": "no-such-lease"}]}
    answer = result(await client.post("/queues/jobs/messages/ack", json=again))
    assert (answer["ack_count"], answer["retry_count"]) == (0, 0)
    assert len(answer["warnings"]) == 2
    assert any("no-such-lease" in warning for warning in answer["warnings"])  # in no set order


async def test_pull_from_a_paused_queue_is_409_and_sends_still_land(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    assert result(await client.post("/queues/jobs/pause"))["paused"] is True
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    assert error_code(await client.post("/queues/jobs/messages/pull", json={}), 409) == "queue_paused"
    assert (await queue(client, "jobs"))["backlog"] == 1

    assert result(await client.post("/queues/jobs/resume"))["paused"] is False
    assert [m["body"] for m in await pull(client, "jobs")] == [1]


async def test_a_batch_sends_every_message_with_its_own_or_the_batch_delay(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    batch = {"messages": [{"body": 1}, {"body": 2, "delay_seconds": 0}, {"body": 3}], "delay_seconds": 600}
    ids = result(await client.post("/queues/jobs/messages/batch", json=batch))["ids"]
    assert len(set(ids)) == 3
    document = await queue(client, "jobs")
    assert (document["backlog"], document["delayed"]) == (1, 2)


async def test_a_batch_over_the_count_limit_stores_nothing(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    batch = {"messages": [{"body": n} for n in range(101)]}
    response = await client.post("/queues/jobs/messages/batch", json=batch)
    assert error_code(response, 400) == "batch_count_too_large"
    assert "100" in response.json()["errors"][0]["message"]
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_a_batch_over_the_byte_limit_stores_nothing(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    batch = {"messages": [{"body": "x" * 100_000, "content_type": "text"} for _ in range(3)]}
    assert error_code(await client.post("/queues/jobs/messages/batch", json=batch), 413) == "batch_too_large"
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_one_bad_message_fails_the_whole_batch(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    batch = {"messages": [{"body": "fine", "content_type": "text"}, {"body": 7, "content_type": "text"}]}
    response = await client.post("/queues/jobs/messages/batch", json=batch)
    assert error_code(response, 400) == "invalid_input"
    assert response.json()["errors"][0]["message"].startswith("messages[1]")
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_a_message_over_the_size_limit_is_413(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    response = await client.post(
        "/queues/jobs/messages", json={"body": "x" * 128_001, "content_type": "text"}
    )
    assert error_code(response, 413) == "message_too_large"
    assert "128,000" in response.json()["errors"][0]["message"]
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_an_out_of_range_delay_names_the_limit_and_stores_nothing(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    response = await client.post("/queues/jobs/messages", json={"body": 1, "delay_seconds": 86_401})
    assert error_code(response, 400) == "limit_exceeded"
    assert "delay_seconds" in response.json()["errors"][0]["message"]
    assert (await queue(client, "jobs"))["delayed"] == 0


async def test_an_unknown_queue_is_404_and_is_not_created(client: httpx.AsyncClient) -> None:
    assert error_code(await client.post("/queues/nope/messages", json={"body": 1}), 404) == "queue_not_found"
    assert error_code(await client.post("/queues/nope/messages/pull", json={}), 404) == "queue_not_found"
    ack = {"acks": [{"lease_id": "a.b.1"}]}
    assert error_code(await client.post("/queues/nope/messages/ack", json=ack), 404) == "queue_not_found"
    assert error_code(await client.post("/queues/nope/messages/ack", json={}), 404) == "queue_not_found"
    assert error_code(await client.get("/queues/nope"), 404) == "queue_not_found"
    assert result(await client.get("/queues")) == []


async def test_an_invalid_queue_name_is_400(client: httpx.AsyncClient) -> None:
    assert error_code(await client.get("/queues/bad.name"), 400) == "invalid_queue_name"
    assert error_code(await client.post("/queues", json={"name": "no spaces"}), 400) == "invalid_input"


async def test_queue_management(client: httpx.AsyncClient) -> None:
    created = result(await client.post("/queues", json={"name": "jobs", "delivery_delay": 5}), 201)
    assert (created["name"], created["delivery_delay"], created["backlog"]) == ("jobs", 5, 0)
    assert error_code(await client.post("/queues", json={"name": "jobs"}), 409) == "queue_already_exists"
    await create(client, "other")
    assert [q["name"] for q in result(await client.get("/queues"))] == ["jobs", "other"]

    updated = result(
        await client.patch("/queues/jobs", json={"delivery_delay": 0, "retention_seconds": 7_200})
    )
    assert (updated["delivery_delay"], updated["retention_seconds"]) == (0, 7_200)
    too_long = await client.patch("/queues/jobs", json={"retention_seconds": 10**9})
    assert error_code(too_long, 400) == "limit_exceeded"
    assert (await queue(client, "jobs"))["retention_seconds"] == 7_200

    result(await client.post("/queues/jobs/messages/batch", json={"messages": [{"body": 1}, {"body": 2}]}))
    assert result(await client.post("/queues/jobs/purge")) == {"name": "jobs", "purged": 2}
    assert (await queue(client, "jobs"))["backlog"] == 0

    assert result(await client.delete("/queues/jobs")) == {"name": "jobs", "deleted": True}
    assert error_code(await client.get("/queues/jobs"), 404) == "queue_not_found"
    assert error_code(await client.delete("/queues/jobs"), 404) == "queue_not_found"
    assert [q["name"] for q in result(await client.get("/queues"))] == ["other"]


async def test_replay_moves_dead_letters_back_to_their_queue(
    client: httpx.AsyncClient, api_app: conveyor.App
) -> None:
    await create(client, "jobs", "jobs-dlq")

    @api_app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq", max_batch_timeout=0)
    async def fail(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise RuntimeError("the service is down")

    result(
        await client.post("/queues/jobs/messages/batch", json={"messages": [{"body": n} for n in range(3)]})
    )
    await drain(api_app)
    peeked = result(await client.get("/queues/jobs-dlq/messages", params={"limit": 10}))
    assert sorted(m["body"] for m in peeked) == [0, 1, 2]  # one settle: no set order among them
    assert peeked[0]["dead_letter"]["source_queue"] == "jobs"
    assert "the service is down" in peeked[0]["dead_letter"]["error"]

    missing = await client.post("/queues/jobs-dlq/messages/replay", json={"to": "typo"})
    assert error_code(missing, 404) == "queue_not_found"
    assert (await queue(client, "jobs-dlq"))["backlog"] == 3

    one = result(await client.post("/queues/jobs-dlq/messages/replay", json={"to": "jobs", "limit": 1}))
    assert one == {"from": "jobs-dlq", "to": "jobs", "replayed": 1}
    rest = result(await client.post("/queues/jobs-dlq/messages/replay", json={"to": "jobs"}))
    assert rest["replayed"] == 2
    replayed = await pull(client, "jobs", batch_size=10)
    assert sorted(m["body"] for m in replayed) == [0, 1, 2]
    assert {m["attempts"] for m in replayed} == {1}
    assert (await queue(client, "jobs-dlq"))["backlog"] == 0


async def test_queues_and_messages_are_the_documents_the_cli_prints(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    await sqlite_app.queue("jobs").send({"n": 1})
    await sqlite_app.queue("jobs").send(b"\x00raw", content_type="bytes")
    async with client_for(sqlite_app) as client:
        peeked = result(await client.get("/queues/jobs/messages"))
        shown = result(await client.get("/queues/jobs"))
    assert peeked == [admin.message_document(m) for m in await sqlite_app.queue("jobs").peek()]
    expected = admin.queue_document(*await admin.one_queue(sqlite_app, "jobs"))
    assert shown.keys() == expected.keys()  # the age goes on growing between the two looks
    assert {**shown, "oldest_age_seconds": 0} == {**expected, "oldest_age_seconds": 0}


async def test_a_send_naming_a_dedup_id_seen_in_the_window_answers_the_first_id(
    client: httpx.AsyncClient,
) -> None:
    created = result(await client.post("/queues", json={"name": "jobs", "dedup_window_seconds": 60}), 201)
    assert created["dedup_window_seconds"] == 60
    first = result(await client.post("/queues/jobs/messages", json={"body": 1, "dedup_id": "job-1"}))
    again = result(await client.post("/queues/jobs/messages", json={"body": 2, "dedup_id": "job-1"}))
    batch = {"messages": [{"body": 3, "dedup_id": "job-1"}, {"body": 4, "dedup_id": "job-2"}]}
    ids = result(await client.post("/queues/jobs/messages/batch", json=batch))["ids"]
    assert again["id"] == first["id"] == ids[0] != ids[1]
    assert (await queue(client, "jobs"))["backlog"] == 2
    patched = result(await client.patch("/queues/jobs", json={"dedup_window_seconds": 0}))
    assert patched["dedup_window_seconds"] == 0


async def test_grouped_sends_are_pulled_one_at_a_time_per_group_and_show_their_group(
    client: httpx.AsyncClient,
) -> None:
    await create(client, "jobs")
    await client.post("/queues/jobs/messages", json={"body": 1, "group": "user-42"})
    batch = {"messages": [{"body": 2, "group": "user-42"}, {"body": 3}]}
    result(await client.post("/queues/jobs/messages/batch", json=batch))
    peeked = result(await client.get("/queues/jobs/messages"))
    assert [(m["body"], m["group"]) for m in peeked] == [(1, "user-42"), (2, "user-42"), (3, None)]
    pulled = await pull(client, "jobs", batch_size=10)
    assert sorted((m["body"], m["group"]) for m in pulled) == [(1, "user-42"), (3, None)]
    response = await client.post("/queues/jobs/messages", json={"body": 1, "group": "has space"})
    assert error_code(response, 400) == "invalid_group_id"


async def test_a_queue_takes_a_partition_count_at_creation_and_keeps_it(client: httpx.AsyncClient) -> None:
    created = result(await client.post("/queues", json={"name": "events", "partitions": 4}), 201)
    assert created["partitions"] == 4
    same = result(await client.patch("/queues/events", json={"partitions": 4, "retention_seconds": 3600}))
    assert (same["partitions"], same["retention_seconds"]) == (4, 3600)
    response = await client.patch("/queues/events", json={"partitions": 2})
    assert error_code(response, 409) == "partition_count_fixed"
    assert (await queue(client, "events"))["partitions"] == 4


async def test_headers_are_sent_and_shown_by_pull_peek_and_a_topics_copies(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    sent = {"body": 1, "headers": {"traceparent": "00-abc-def-01", "tenant": "ünï"}}
    first = result(await client.post("/queues/jobs/messages", json=sent))["id"]
    batch = {"messages": [{"body": 2, "headers": {"k": "v"}}, {"body": 3}]}
    second, third = result(await client.post("/queues/jobs/messages/batch", json=batch))["ids"]
    peeked = {m["id"]: m["headers"] for m in result(await client.get("/queues/jobs/messages"))}
    assert peeked == {first: sent["headers"], second: {"k": "v"}, third: {}}
    pulled = result(await client.post("/queues/jobs/messages/pull", json={"batch_size": 10}))["messages"]
    assert {m["id"]: m["headers"] for m in pulled} == peeked
    subscription = {"name": "events", "subscriptions": [{"queue": "audit"}]}
    result(await client.post("/topics", json=subscription), 201)
    result(await client.post("/topics/events/messages", json={"body": {"type": "x"}, "headers": {"k": "t"}}))
    [copy] = result(await client.get("/queues/audit/messages"))
    assert copy["headers"] == {"k": "t"}


async def test_bad_headers_are_invalid_headers_and_store_nothing(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    response = await client.post("/queues/jobs/messages", json={"body": 1, "headers": {"k": 1}})
    assert error_code(response, 400) == "invalid_headers"
    batch = {"messages": [{"body": 1}, {"body": 2, "headers": {"": "v"}}]}
    assert error_code(await client.post("/queues/jobs/messages/batch", json=batch), 400) == "invalid_headers"
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_a_bad_dedup_id_is_invalid_dedup_id_and_stores_nothing(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    response = await client.post("/queues/jobs/messages", json={"body": 1, "dedup_id": "has space"})
    assert error_code(response, 400) == "invalid_dedup_id"
    batch = {"messages": [{"body": 1}, {"body": 2, "dedup_id": "x" * 129}]}
    assert error_code(await client.post("/queues/jobs/messages/batch", json=batch), 400) == "invalid_dedup_id"
    assert (await queue(client, "jobs"))["backlog"] == 0


async def test_delete_one_message_by_id(client: httpx.AsyncClient) -> None:
    await create(client, "jobs")
    doomed = result(await client.post("/queues/jobs/messages", json={"body": "doomed"}))["id"]
    held = result(await client.post("/queues/jobs/messages", json={"body": "held"}))["id"]
    assert result(await client.delete(f"/queues/jobs/messages/{doomed}")) == {
        "queue": "jobs",
        "id": doomed,
        "deleted": True,
    }
    assert error_code(await client.delete(f"/queues/jobs/messages/{doomed}"), 404) == "message_not_found"
    [pulled] = await pull(client, "jobs")
    assert pulled["id"] == held
    assert error_code(await client.delete(f"/queues/jobs/messages/{held}"), 409) == "message_leased"
    assert (await queue(client, "jobs"))["in_flight"] == 1
    assert error_code(await client.delete(f"/queues/nope/messages/{held}"), 404) == "queue_not_found"
