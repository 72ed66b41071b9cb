"""Topics through the HTTP API, on every engine: create, subscribe, publish, list, unsubscribe, delete."""

from __future__ import annotations

import httpx

import conveyor
from tests.http.conftest import error_code, result


async def test_a_topic_over_http(client: httpx.AsyncClient, api_app: conveyor.App) -> None:
    created = result(
        await client.post(
            "/topics",
            json={
                "name": "orders",
                "subscriptions": [{"queue": "kitchen", "types": ["ORDER_UP"]}, {"queue": "bar"}],
            },
        ),
        201,
    )
    assert [(s["queue"], s["types"]) for s in created["subscriptions"]] == [
        ("bar", None),
        ("kitchen", ["ORDER_UP"]),
    ]
    subscribed = result(
        await client.post("/topics/orders/subscriptions", json={"queue": "billing", "types": ["PAID"]})
    )
    assert subscribed["types"] == ["PAID"]

    published = result(
        await client.post("/topics/orders/messages", json={"body": {"type": "ORDER_UP", "n": 1}})
    )
    assert sorted(published["ids"]) == ["bar", "kitchen"]
    assert published["type"] == "ORDER_UP"
    [copy] = await api_app.queue("kitchen").peek()
    assert (copy.id, copy.body) == (published["ids"]["kitchen"], {"type": "ORDER_UP", "n": 1})
    text = result(
        await client.post("/topics/orders/messages", json={"body": "hello", "content_type": "text"})
    )
    assert list(text["ids"]) == ["bar"]  # no type: only the subscription without a filter

    [listed] = result(await client.get("/topics"))
    assert listed["name"] == "orders" and len(listed["subscriptions"]) == 3
    assert result(await client.get("/topics/orders")) == listed

    removed = result(await client.delete("/topics/orders/subscriptions/bar"))
    assert removed == {"topic": "orders", "queue": "bar", "unsubscribed": True}
    assert result(await client.delete("/topics/orders")) == {
        "name": "orders",
        "deleted": True,
        "subscriptions": 2,
    }
    assert result(await client.get("/topics")) == []
    assert len(await api_app.queue("bar").peek()) == 2  # the queues and their messages stay


async def test_unknown_topics_and_bad_input_change_nothing(
    client: httpx.AsyncClient, api_app: conveyor.App
) -> None:
    assert error_code(await client.get("/topics/nope"), 404) == "topic_not_found"
    assert error_code(await client.delete("/topics/nope"), 404) == "topic_not_found"
    assert error_code(await client.delete("/topics/nope/subscriptions/q"), 404) == "subscription_not_found"
    assert (
        error_code(await client.post("/topics", json={"name": "orders", "subscriptions": []}), 400)
        == "invalid_input"
    )
    bad_queue = {"name": "orders", "subscriptions": [{"queue": "ok"}, {"queue": "bad name"}]}
    assert error_code(await client.post("/topics", json=bad_queue), 400) in {
        "invalid_input",
        "invalid_queue_name",
    }
    empty_types = {"queue": "kitchen", "types": []}
    assert (
        error_code(await client.post("/topics/orders/subscriptions", json=empty_types), 400)
        == "invalid_input"
    )
    assert result(await client.get("/topics")) == []
    assert [info.name for info in await api_app.list_queues()] == []
