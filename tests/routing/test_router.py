"""Router: typed messages validated once, routed by type, failures isolated, bad bodies dead-lettered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import pydantic_core
import pytest

import conveyor
from conveyor.consumer.message import Outcome
from conveyor.core.ids import new_message_id
from conveyor.testing import drain
from conveyor.types import ContentType, LeasedMessage, OutgoingMessage

ROOT = Path(__file__).resolve().parents[2]


class ClickData(pydantic.BaseModel):
    id: str
    account_id: str = pydantic.Field(alias="accountId")


class LinkClick(pydantic.BaseModel):
    type: Literal["LINK_CLICK"]
    data: ClickData


class Signup(pydantic.BaseModel):
    type: Literal["SIGNUP"]
    email: str


Event = Annotated[LinkClick | Signup, pydantic.Field(discriminator="type")]


def click(n: int) -> dict[str, object]:
    return {"type": "LINK_CLICK", "data": {"id": f"c{n}", "accountId": "acct"}}


def signup(n: int) -> dict[str, object]:
    return {"type": "SIGNUP", "email": f"user{n}@example.com"}


async def send_raw(app: conveyor.App, queue: str, body: bytes, content_type: ContentType = "json") -> None:
    """Write bytes as a foreign producer would (the HTTP API, another language): no validation."""
    await app.ensure_queue(queue)
    await app.backend.send_many([OutgoingMessage(queue, new_message_id(), body, content_type)])


async def dead_letters(app: conveyor.App, queue: str) -> list[conveyor.PeekedMessage]:
    return await app.queue(queue).peek(100)


def error_of(message: conveyor.PeekedMessage) -> str:
    assert message.dead_letter is not None
    return message.dead_letter.error


# -- receiving ----------------------------------------------------------------------------------


async def test_mixed_batch_routes_valid_events_and_dead_letters_invalid_ones(app: conveyor.App) -> None:
    router = conveyor.Router(Event)
    clicks: list[LinkClick] = []
    signups: list[Signup] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        clicks.append(event)

    @router.on(Signup)
    async def on_signup(event: Signup, env: conveyor.Env) -> None:
        signups.append(event)

    app.consumer("events", dead_letter_queue="events-dlq", max_batch_size=20)(router)
    plain = app.queue("events")  # no schema: the producer lets anything through
    await plain.send_batch([click(1), signup(1), {"type": "REFUND", "amount": 3}, click(2)])
    await plain.send({"type": "LINK_CLICK", "data": {"id": "c3"}})  # accountId missing
    await plain.send("a text body", content_type="text")
    await send_raw(app, "events", b'{"type": "SIGNUP", "email": ')  # truncated JSON
    await plain.send(signup(2))

    await drain(app)

    assert sorted(c.data.id for c in clicks) == ["c1", "c2"]
    assert sorted(s.email for s in signups) == ["user1@example.com", "user2@example.com"]
    assert all(isinstance(c, LinkClick) for c in clicks)
    dead = await dead_letters(app, "events-dlq")
    errors = sorted(error_of(m) for m in dead)
    assert len(errors) == 4
    assert all(error.startswith("invalid message: ") for error in errors)
    assert any("REFUND" in e and "union_tag_invalid" in e for e in errors)
    assert any("LINK_CLICK.data.accountId: Field required [missing]" in e for e in errors)
    assert any("content type 'text' is not json" in e for e in errors)
    assert any("[json_invalid]" in e for e in errors)
    # never retried: dead-lettered on their first delivery
    assert [m.dead_letter.attempts for m in dead if m.dead_letter] == [1, 1, 1, 1]
    assert {m.dead_letter.source_queue for m in dead if m.dead_letter} == {"events"}
    assert (await plain.stats()).total == 0


async def test_counters_add_up(app: conveyor.App) -> None:
    router = conveyor.Router(Event)

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        if event.data.id == "c2":
            raise RuntimeError("boom")

    app.consumer("events", dead_letter_queue="events-dlq", max_retries=1)(router)
    queue = app.queue("events")
    await queue.send_batch([click(1), click(2), signup(1), {"type": "SIGNUP"}, {"type": "NOPE"}])
    await send_raw(app, "events", b"not json")

    await drain(app)

    stats = router.stats
    assert stats["LINK_CLICK"] == conveyor.TypeCounters(validated=3, handled=1, failed=2)
    assert stats["SIGNUP"] == conveyor.TypeCounters(validated=1, invalid=1, unhandled=1)
    assert stats["(unknown)"] == conveyor.TypeCounters(invalid=2)
    assert stats.total == conveyor.TypeCounters(validated=4, invalid=3, handled=1, failed=2, unhandled=1)
    assert set(stats.by_type()) == {"LINK_CLICK", "SIGNUP", "(unknown)"}
    # 1 click exhausted its retries, 1 signup had no handler, 3 bodies were invalid
    assert len(await dead_letters(app, "events-dlq")) == 5


async def test_a_failing_event_is_retried_alone_then_dead_lettered(app: conveyor.App) -> None:
    router = conveyor.Router(Event)
    seen: list[tuple[str, int]] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        seen.append((event.data.id, len(seen)))
        if event.data.id == "c2":
            raise RuntimeError(f"cannot store click {event.data.id}")

    app.consumer("events", dead_letter_queue="events-dlq", max_retries=2)(router)
    await app.queue("events").send_batch([click(1), click(2), click(3)])

    await drain(app)

    calls = [click_id for click_id, _ in seen]
    assert calls.count("c1") == 1
    assert calls.count("c3") == 1
    assert calls.count("c2") == 3  # max_retries + 1 deliveries
    dead = await dead_letters(app, "events-dlq")
    assert len(dead) == 1
    assert dead[0].body == click(2)
    assert dead[0].dead_letter is not None
    assert dead[0].dead_letter.attempts == 3
    assert dead[0].dead_letter.error == "RuntimeError: cannot store click c2"
    assert (await app.queue("events").stats()).total == 0


async def test_batch_handler_gets_a_list_and_its_failure_retries_only_its_group(app: conveyor.App) -> None:
    router = conveyor.Router(Event)
    click_calls: list[str] = []
    signup_calls: list[list[str]] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        click_calls.append(event.data.id)

    @router.on(Signup, batch=True)
    async def on_signups(events: list[Signup], env: conveyor.Env) -> None:
        assert all(isinstance(event, Signup) for event in events)
        signup_calls.append([event.email for event in events])
        if len(signup_calls) == 1:
            raise ConnectionError("database went away")

    app.consumer("events", dead_letter_queue="events-dlq", max_batch_size=10)(router)
    await app.queue("events").send_batch([signup(1), click(1), signup(2), click(2), signup(3)])

    await drain(app)

    assert sorted(click_calls) == ["c1", "c2"]  # acked the first time, never redelivered
    emails = [email for call in signup_calls for email in call]
    first_group = signup_calls[0]
    # the failed group came back whole, and only it; nothing else was delivered twice
    assert sorted(emails) == sorted([*first_group, *first_group, *set(emails) - set(first_group)])
    assert set(emails) == {"user1@example.com", "user2@example.com", "user3@example.com"}
    assert router.stats["SIGNUP"].failed == len(first_group)
    assert router.stats["SIGNUP"].handled == 3
    assert await dead_letters(app, "events-dlq") == []


def leased(n: int, body: object) -> LeasedMessage:
    return LeasedMessage(f"m{n}", "events", pydantic_core.to_json(body), "json", 0.0, 1, f"lease{n}")


async def test_handlers_run_in_message_order_and_marks_are_per_event() -> None:
    router = conveyor.Router(Event)
    calls: list[str] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        calls.append(event.data.id)
        if event.data.id == "c2":
            raise RuntimeError("boom")

    @router.on(Signup, batch=True)
    async def on_signups(events: list[Signup], env: conveyor.Env) -> None:
        calls.append("+".join(event.email.split("@")[0] for event in events))

    bodies = [click(1), signup(1), click(2), {"type": "SIGNUP"}, signup(2), click(3)]
    messages = [conveyor.Message(leased(n, body)) for n, body in enumerate(bodies)]
    await router(conveyor.MessageBatch("events", messages), conveyor.App("memory://").env)

    # per-event handlers in message order; the batch handler where its type first appears
    assert calls == ["c1", "user1+user2", "c2", "c3"]
    assert [m.outcome for m in messages] == [
        Outcome.ACK,
        Outcome.ACK,
        Outcome.RETRY,
        Outcome.DEAD_LETTER,
        Outcome.ACK,
        Outcome.ACK,
    ]
    assert messages[2].reason == "RuntimeError: boom"
    assert messages[3].reason is not None
    assert messages[3].reason.startswith(
        "invalid message: 1 validation error for tagged-union[LinkClick,Signup]"
    )


async def test_unhandled_type_is_dead_lettered_by_default(app: conveyor.App) -> None:
    router = conveyor.Router(Event)

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        pass

    app.consumer("events", dead_letter_queue="events-dlq")(router)
    await app.queue("events").send_batch([click(1), signup(1)])

    await drain(app)

    dead = await dead_letters(app, "events-dlq")
    assert [(m.body, error_of(m)) for m in dead] == [(signup(1), "no handler for type SIGNUP")]
    assert router.stats["SIGNUP"].unhandled == 1
    assert router.stats["LINK_CLICK"].handled == 1


async def test_unhandled_type_is_acked_when_asked(app: conveyor.App) -> None:
    router = conveyor.Router(Event, unhandled="ack")

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        pass

    app.consumer("events", dead_letter_queue="events-dlq")(router)
    await app.queue("events").send_batch([click(1), signup(1)])

    await drain(app)

    assert await dead_letters(app, "events-dlq") == []
    assert (await app.queue("events").stats()).total == 0
    assert router.stats["SIGNUP"] == conveyor.TypeCounters(validated=1, unhandled=1)


async def test_invalid_body_without_a_dead_letter_queue_is_dropped_not_retried(app: conveyor.App) -> None:
    router = conveyor.Router(Event)
    handled: list[LinkClick] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        handled.append(event)

    app.consumer("events", max_retries=3)(router)
    await app.queue("events").send_batch([{"type": "LINK_CLICK"}, click(1)])

    await drain(app)

    assert [event.data.id for event in handled] == ["c1"]
    assert (await app.queue("events").stats()).total == 0
    # validated on every delivery: one count means one delivery
    assert router.stats["LINK_CLICK"].invalid == 1


async def test_a_single_model_router_with_camel_case_wire_format(app: conveyor.App) -> None:
    router = conveyor.Router(LinkClick)
    handled: list[LinkClick] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        handled.append(event)

    app.consumer("clicks", dead_letter_queue="clicks-dlq")(router)
    await app.queue("clicks", schema=LinkClick).send(
        LinkClick(type="LINK_CLICK", data=ClickData(id="c1", accountId="acct-9"))
    )
    await app.queue("clicks").send({"type": "LINK_CLICK", "data": {"id": "c2", "account_id": "x"}})

    await drain(app)

    assert [(e.data.id, e.data.account_id) for e in handled] == [("c1", "acct-9")]
    [dead] = await dead_letters(app, "clicks-dlq")
    assert "data.accountId: Field required" in error_of(dead)


async def test_handlers_get_the_apps_env(app: conveyor.App) -> None:
    router = conveyor.Router(Event)

    @router.on(Signup)
    async def on_signup(event: Signup, env: conveyor.Env) -> None:
        await env.queues["welcome-mails"].send({"to": event.email})

    app.consumer("events")(router)
    await app.queue("events").send(signup(7))

    await drain(app)

    [mail] = await app.queue("welcome-mails").peek()
    assert mail.body == {"to": "user7@example.com"}


async def test_a_handler_with_a_third_parameter_gets_the_delivered_message(app: conveyor.App) -> None:
    router = conveyor.Router(Event)
    seen: list[tuple[str, str | None, int]] = []
    batches: list[list[tuple[str, str]]] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env, message: conveyor.Message) -> None:
        seen.append((event.data.id, message.headers.get("trace"), message.attempts))

    @router.on(Signup, batch=True)
    async def on_signups(events: list[Signup], env: conveyor.Env, messages: list[conveyor.Message]) -> None:
        batches.append([(event.email, message.id) for event, message in zip(events, messages, strict=True)])

    app.consumer("events", max_batch_size=10)(router)
    ids = await app.queue("events").send_batch(
        [
            conveyor.SendRequest(click(1), headers={"trace": "t-1"}),
            conveyor.SendRequest(signup(1)),
            conveyor.SendRequest(click(2)),
            conveyor.SendRequest(signup(2)),
        ]
    )
    await drain(app)

    assert seen == [("c1", "t-1", 1), ("c2", None, 1)]
    assert batches == [[("user1@example.com", ids[1]), ("user2@example.com", ids[3])]]


# -- registration -------------------------------------------------------------------------------


class Stranger(pydantic.BaseModel):
    type: Literal["STRANGER"]


def test_registering_a_model_outside_the_union_is_an_error() -> None:
    router = conveyor.Router(Event)
    with pytest.raises(TypeError, match="Stranger is not in this router's union \\(LinkClick \\| Signup\\)"):
        router.on(Stranger)


def test_registering_a_model_twice_is_an_error() -> None:
    router = conveyor.Router(Event)

    @router.on(Signup)
    async def first(event: Signup, env: conveyor.Env) -> None:
        pass

    with pytest.raises(ValueError, match="Signup already has a handler"):
        router.on(Signup, batch=True)


def test_a_handler_must_be_async() -> None:
    router = conveyor.Router(Event)

    def sync_handler(event: Signup, env: conveyor.Env) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        router.on(Signup)(sync_handler)  # type: ignore[arg-type]
    assert router.routes == {}


def test_a_router_needs_a_union_of_models() -> None:
    with pytest.raises(TypeError, match="routes pydantic models"):
        conveyor.Router(LinkClick | int)
    with pytest.raises(ValueError, match="unhandled must be one of dead_letter, ack"):
        conveyor.Router(Event, unhandled="retry")  # type: ignore[arg-type]


def test_labels_come_from_the_discriminator_tags() -> None:
    router = conveyor.Router(Event)
    labels = router.union.labels
    assert (labels[LinkClick], labels[Signup]) == ("LINK_CLICK", "SIGNUP")
    assert len(labels) == 2
    assert router.union.discriminator == "type"


def test_a_router_is_a_consumer_handler() -> None:
    app = conveyor.App("memory://")
    router = conveyor.Router(Event)
    assert app.consumer("events", dead_letter_queue="events-dlq")(router) is router
    assert app.consumers[0].handler is router


@pytest.mark.slow
def test_mypy_checks_the_handlers_event_type(tmp_path: Path) -> None:
    source = tmp_path / "handlers.py"
    source.write_text(
        "from typing import Annotated, Literal\n"
        "import conveyor, pydantic\n"
        "class LinkClick(pydantic.BaseModel):\n"
        "    type: Literal['LINK_CLICK']\n"
        "class Signup(pydantic.BaseModel):\n"
        "    type: Literal['SIGNUP']\n"
        "router = conveyor.Router(Annotated[LinkClick | Signup, pydantic.Field(discriminator='type')])\n"
        "@router.on(LinkClick)\n"
        "async def good(event: LinkClick, env: conveyor.Env) -> None: ...\n"
        "@router.on(Signup, batch=True)\n"
        "async def good_batch(events: list[Signup], env: conveyor.Env) -> None: ...\n"
        "@router.on(Signup)\n"
        "async def wrong_model(event: LinkClick, env: conveyor.Env) -> None: ...\n"
        "@router.on(LinkClick, batch=True)\n"
        "async def not_a_list(event: LinkClick, env: conveyor.Env) -> None: ...\n"
        "@router.on(LinkClick)\n"
        "async def with_message(\n"
        "    event: LinkClick, env: conveyor.Env, message: conveyor.Message\n"
        ") -> None: ...\n"
        "@router.on(Signup, batch=True)\n"
        "async def with_messages(\n"
        "    events: list[Signup], env: conveyor.Env, messages: list[conveyor.Message]\n"
        ") -> None: ...\n"
        "@router.on(LinkClick)\n"
        "async def message_not_a_list(event: LinkClick, env: conveyor.Env, message: list[int]) -> None: ...\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # only the snippet's own errors: another module's would be another test's business
    lines = [line.removeprefix(f"{source}:") for line in result.stdout.splitlines()]
    errors = [line.split(":")[0] for line in lines if ": error:" in line and line[:1].isdigit()]
    assert errors == ["12", "14", "24"], result.stdout


@pytest.mark.slow
def test_the_typed_clicks_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "typed_clicks.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "stored 5 clicks" in result.stdout
