"""HTTP pull consumers configured per queue (`wrangler queues consumer http add`), through the
native API on every engine: the settings are kept with the queue, a pull that names no batch size
or visibility timeout gets the consumer's, a retry that names no delay waits its retry_delay, and
a pulled message retried past max_retries, or leased again past the bound after its leases
expired, goes to the dead-letter queue (or is deleted without one)."""

from __future__ import annotations

from typing import Any

import httpx

import conveyor
from tests.http.conftest import error_code, result
from tests.support.apps import TimeMachine

CONSUMER = {
    "batch_size": 2,
    "max_retries": 1,
    "retry_delay": 0,
    "visibility_timeout_ms": 60_000,
    "dead_letter_queue": "jobs-dlq",
}


async def configure(client: httpx.AsyncClient, **settings: Any) -> dict[str, Any]:
    document: dict[str, Any] = result(
        await client.put("/queues/jobs/consumers/http", json={**CONSUMER, **settings})
    )
    return document


async def pull(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = result(await client.post("/queues/jobs/messages/pull", json=body))[
        "messages"
    ]
    return messages


async def retry(client: httpx.AsyncClient, *messages: dict[str, Any], **options: Any) -> dict[str, Any]:
    retries = [{"lease_id": message["lease_id"], **options} for message in messages]
    acked: dict[str, Any] = result(await client.post("/queues/jobs/messages/ack", json={"retries": retries}))
    return acked


async def test_the_settings_are_kept_with_the_queue_shown_and_removed(
    client: httpx.AsyncClient, api_app: conveyor.App
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    assert result(await client.get("/queues/jobs"))["pull_consumer"] is None
    assert error_code(await client.get("/queues/jobs/consumers/http"), 404) == "consumer_not_found"

    assert await configure(client) == CONSUMER
    assert result(await client.get("/queues/jobs/consumers/http")) == CONSUMER
    assert result(await client.get("/queues/jobs"))["pull_consumer"] == CONSUMER
    # the dead-letter queue it names is created with it
    assert result(await client.get("/queues/jobs-dlq"))["name"] == "jobs-dlq"
    # a second App on the same storage reads them from the engine
    assert (await api_app.get_queue("jobs")).settings.pull_consumer == conveyor.PullConsumer(
        batch_size=2, max_retries=1, retry_delay=0.0, visibility_timeout=60.0, dead_letter_queue="jobs-dlq"
    )
    # a change of another setting keeps them
    result(await client.patch("/queues/jobs", json={"delivery_delay": 1}))
    assert result(await client.get("/queues/jobs/consumers/http")) == CONSUMER
    # PUT sets every setting: one left out takes its default
    replaced = result(await client.put("/queues/jobs/consumers/http", json={"max_retries": 5}))
    assert replaced == {
        "batch_size": 5,
        "max_retries": 5,
        "retry_delay": 0.0,
        "visibility_timeout_ms": 30_000,
        "dead_letter_queue": None,
    }

    assert result(await client.delete("/queues/jobs/consumers/http")) == {"name": "jobs", "deleted": True}
    assert result(await client.get("/queues/jobs"))["pull_consumer"] is None
    assert error_code(await client.delete("/queues/jobs/consumers/http"), 404) == "consumer_not_found"


async def test_bad_settings_are_refused_and_change_nothing(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"batch_size": 0}, "invalid_input"),
        ({"batch_size": 101}, "invalid_input"),
        ({"max_retries": -1}, "invalid_input"),
        ({"visibility_timeout_ms": 10}, "invalid_input"),
        ({"retry_delay": 86_401}, "limit_exceeded"),
        ({"dead_letter_queue": "jobs"}, "invalid_value"),
        ({"dead_letter_queue": "no spaces"}, "invalid_queue_name"),
        ({"max_retry": 2}, "invalid_input"),
    ]
    for settings, code in refused:
        response = await client.put("/queues/jobs/consumers/http", json={**CONSUMER, **settings})
        assert error_code(response, 400) == code, settings
    assert result(await client.get("/queues/jobs/consumers/http")) == CONSUMER
    # a missing queue is a 404, and its dead-letter queue is not made
    missing = await client.put("/queues/ghost/consumers/http", json={"dead_letter_queue": "ghost-dlq"})
    assert error_code(missing, 404) == "queue_not_found"
    assert error_code(await client.get("/queues/ghost-dlq"), 404) == "queue_not_found"


async def test_a_pull_naming_no_batch_size_or_visibility_gets_the_consumers(
    client: httpx.AsyncClient, time_machine: TimeMachine
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client, visibility_timeout_ms=300)
    messages = [{"body": n} for n in range(6)]
    result(await client.post("/queues/jobs/messages/batch", json={"messages": messages}))

    # a pull's own settings win
    held = await pull(client, batch_size=3, visibility_timeout_ms=60_000)
    assert [message["body"] for message in held] == [0, 1, 2]
    # the consumer's batch size of 2 and its lease of 300 ms
    assert [message["body"] for message in await pull(client)] == [3, 4]
    await time_machine.advance(0.5)
    again = await pull(client, batch_size=10, visibility_timeout_ms=60_000)
    assert sorted((message["body"], message["attempts"]) for message in again) == [(3, 2), (4, 2), (5, 1)]


async def test_a_retry_past_max_retries_goes_to_the_dead_letter_queue(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client)
    sent = result(await client.post("/queues/jobs/messages", json={"body": {"n": 1}}))["id"]

    (first,) = await pull(client)
    assert await retry(client, first) == {
        "ack_count": 0,
        "retry_count": 1,
        "dead_letter_count": 0,
        "warnings": [],
    }
    (second,) = await pull(client)
    assert second["attempts"] == 2  # max_retries 1: this is its last delivery
    assert await retry(client, second) == {
        "ack_count": 0,
        "retry_count": 1,
        "dead_letter_count": 1,
        "warnings": [],
    }
    assert await pull(client) == []
    (dead,) = result(await client.get("/queues/jobs-dlq/messages"))
    assert dead["body"] == {"n": 1}
    record = dead["dead_letter"]
    assert (record["original_id"], record["source_queue"], record["attempts"]) == (sent, "jobs", 2)
    assert record["error"] == "retried by the pull consumer past its max_retries"
    # the same lease settled again is stale, as any settled lease
    assert (await retry(client, second))["warnings"] == [
        f"lease {second['lease_id']!r} is unknown or has expired"
    ]


async def test_without_a_dead_letter_queue_a_message_past_its_retries_is_deleted(
    client: httpx.AsyncClient,
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client, max_retries=0, dead_letter_queue=None)
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    (message,) = await pull(client)
    assert (await retry(client, message))["dead_letter_count"] == 1
    assert await pull(client) == []
    assert result(await client.get("/queues/jobs"))["backlog"] == 0
    assert [queue["name"] for queue in result(await client.get("/queues"))] == ["jobs"]


async def test_a_retry_naming_no_delay_waits_the_consumers_retry_delay(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client, retry_delay=3_600, max_retries=10)
    result(await client.post("/queues/jobs/messages/batch", json={"messages": [{"body": 1}, {"body": 2}]}))
    one, two = await pull(client)
    await retry(client, one)  # the consumer's hour
    await retry(client, two, delay_seconds=0)  # its own: none
    assert [message["body"] for message in await pull(client, batch_size=10)] == [2]
    assert result(await client.get("/queues/jobs"))["delayed"] == 1


async def test_a_message_whose_leases_expire_is_dead_lettered_at_its_next_lease_past_the_bound(
    client: httpx.AsyncClient, time_machine: TimeMachine
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client, visibility_timeout_ms=300)
    result(await client.post("/queues/jobs/messages", json={"body": "poison"}))
    for attempt in (1, 2):  # max_retries 1: two deliveries, both without an outcome
        (message,) = await pull(client)
        assert message["attempts"] == attempt
        await time_machine.advance(0.5)
    assert await pull(client) == []  # the third lease dead-letters it instead
    (dead,) = result(await client.get("/queues/jobs-dlq/messages"))
    assert dead["body"] == "poison" and dead["dead_letter"]["attempts"] == 2
    assert dead["dead_letter"]["error"] == (
        "delivered 2 times without an outcome: the worker handling it exited or lost its lease 2 times"
    )
    assert result(await client.get("/queues/jobs"))["in_flight"] == 0


async def test_extend_and_ack_take_the_lease_ids_a_consumers_pull_gives(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client)
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    (message,) = await pull(client)
    extended = result(
        await client.post(
            "/queues/jobs/messages/extend",
            json={"leases": [{"lease_id": message["lease_id"], "visibility_timeout_ms": 60_000}]},
        )
    )
    assert extended == {"extended_count": 1, "warnings": []}
    acked = result(
        await client.post("/queues/jobs/messages/ack", json={"acks": [{"lease_id": message["lease_id"]}]})
    )
    assert acked["ack_count"] == 1
    assert result(await client.get("/queues/jobs"))["in_flight"] == 0


async def test_a_dead_letter_queue_deleted_after_is_created_again_when_a_message_goes_to_it(
    client: httpx.AsyncClient,
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    await configure(client, max_retries=0)
    result(await client.delete("/queues/jobs-dlq"))
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    (message,) = await pull(client)
    assert (await retry(client, message))["dead_letter_count"] == 1
    assert [m["body"] for m in result(await client.get("/queues/jobs-dlq/messages"))] == [1]
