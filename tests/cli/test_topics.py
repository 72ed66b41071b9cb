"""`conveyor topics …`: a topic managed and published to from the shell, read back through the API."""

from __future__ import annotations

import conveyor
from tests.cli.conftest import Cli, assert_one_error_line


async def _bodies(app: conveyor.App, queue: str) -> list[object]:
    return [message.body for message in await app.queue(queue).peek(100)]


def test_create_subscribe_publish_and_list_a_topic(cli: Cli) -> None:
    created = cli.json(
        "topics", "create", "orders", "--queue", "kitchen", "--queue", "bar", "--type", "ORDER_UP"
    )
    assert [(s["queue"], s["types"]) for s in created["subscriptions"]] == [
        ("bar", ["ORDER_UP"]),
        ("kitchen", ["ORDER_UP"]),
    ]
    subscribed = cli.json("topics", "subscribe", "orders", "billing")
    assert (subscribed["queue"], subscribed["types"]) == ("billing", None)

    published = cli.json("topics", "publish", "orders", '{"type": "ORDER_UP", "table": 4}')
    assert sorted(published["ids"]) == ["bar", "billing", "kitchen"]
    assert published["type"] == "ORDER_UP"
    other = cli.json("topics", "publish", "orders", '{"type": "PAID"}')
    assert list(other["ids"]) == ["billing"]

    assert cli.api(lambda app: _bodies(app, "kitchen")) == [{"type": "ORDER_UP", "table": 4}]
    assert cli.api(lambda app: _bodies(app, "billing")) == [
        {"type": "ORDER_UP", "table": 4},
        {"type": "PAID"},
    ]
    [topic] = cli.json("topics", "list")
    assert topic["name"] == "orders"
    assert [s["queue"] for s in topic["subscriptions"]] == ["bar", "billing", "kitchen"]
    table = cli.ok("topics", "list").stdout
    assert "orders" in table and "every type" in table and "ORDER_UP" in table


def test_a_publish_no_subscription_matches_stores_nothing(cli: Cli) -> None:
    cli.ok("topics", "create", "orders", "-q", "kitchen", "-T", "ORDER_UP")
    assert "nothing stored" in cli.ok("topics", "publish", "orders", '{"type": "PAID"}').stdout
    assert cli.api(lambda app: _bodies(app, "kitchen")) == []


def test_unsubscribe_and_delete_leave_the_queues_and_their_messages(cli: Cli) -> None:
    cli.ok("topics", "create", "orders", "-q", "kitchen", "-q", "bar")
    cli.ok("topics", "publish", "orders", '{"type": "ORDER_UP"}')
    cli.ok("topics", "unsubscribe", "orders", "bar")
    assert [s["queue"] for s in cli.json("topics", "list")[0]["subscriptions"]] == ["kitchen"]
    deleted = cli.json("topics", "delete", "orders", "--force")
    assert deleted == {"name": "orders", "deleted": True, "subscriptions": 1}
    assert cli.json("topics", "list") == []
    assert cli.api(lambda app: _bodies(app, "bar")) == [{"type": "ORDER_UP"}]
    assert cli.api(lambda app: _bodies(app, "kitchen")) == [{"type": "ORDER_UP"}]


def test_delete_asks_first(cli: Cli) -> None:
    cli.ok("topics", "create", "orders", "-q", "kitchen")
    result = cli("topics", "delete", "orders", input="n\n")
    assert result.exit_code == 1
    assert len(cli.json("topics", "list")) == 1


def test_unknown_topics_and_subscriptions_are_one_line_errors(cli: Cli) -> None:
    assert_one_error_line(
        cli("topics", "delete", "nope", "--force"), "topic 'nope' does not exist", "topic_not_found"
    )
    cli.ok("topics", "create", "orders", "-q", "kitchen")
    assert_one_error_line(cli("topics", "unsubscribe", "orders", "bar"), "subscription_not_found")
    assert_one_error_line(cli("topics", "create", "bad name", "-q", "kitchen"), "invalid_queue_name")
    assert_one_error_line(cli("topics", "publish", "orders", "{not json"), "invalid_json")
