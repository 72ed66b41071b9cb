"""The dashboard as an operator uses it: figures from the background sampler, a queue's messages
and dead letters with their errors, and actions that need a confirmation step and change nothing
when refused. (tests/http/test_dashboard_browser.py looks at the pages in Chromium.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

import conveyor
import conveyor.admin
from conveyor.admin import QueueHistory
from conveyor.testing import FakeClock, drain
from tests.http.conftest import client_for
from tests.support.polling import eventually


@pytest.fixture
async def memory_app() -> AsyncIterator[conveyor.App]:
    async with conveyor.App("memory://", auto_create=False, clock=FakeClock()) as app:
        yield app


def history_of(client: httpx.AsyncClient) -> QueueHistory:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    history: QueueHistory = transport.app.state.queue_history  # type: ignore[attr-defined]
    return history


def row(page: str, queue: str) -> str:
    match = re.search(rf'<tr data-queue="{queue}">.*?</tr>', page, re.S)
    assert match, f"no row for {queue}"
    return match.group(0)


def cell(page: str, queue: str, label: str) -> str:
    match = re.search(rf'data-label="{label}"[^>]*>(.*?)</td>', row(page, queue), re.S)
    assert match, f"no {label} cell for {queue}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


async def failing_consumer_dead_letters(app: conveyor.App, count: int) -> None:
    """`count` messages of `jobs` dead-lettered to `jobs-dlq` by a handler that always raises."""

    @app.consumer("jobs", max_retries=0, dead_letter_queue="jobs-dlq")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        raise RuntimeError("the payment service is down")

    await app.queue("jobs").send_batch([{"order": n} for n in range(count)])
    await drain(app)


async def test_the_queue_list_shows_the_sampled_figures_not_a_count_per_view(
    memory_app: conveyor.App,
) -> None:
    for name in ("jobs", "jobs-dlq", "reports"):
        await memory_app.create_queue(name)
    await memory_app.queue("jobs").send_batch([1, 2, 3])
    await memory_app.queue("jobs-dlq").send("x")
    await memory_app.queue("reports").pause()
    async with client_for(memory_app) as client:
        await history_of(client).sample()
        page = (await client.get("/")).text
        assert cell(page, "jobs", "backlog") == "3"
        assert cell(page, "jobs", "dead letters") == "1 in jobs-dlq"
        assert "dead letters of jobs" in row(page, "jobs-dlq")
        assert "paused" in row(page, "reports") and "paused" not in row(page, "jobs")

        await memory_app.queue("jobs").send_batch([4, 5])
        assert cell((await client.get("/")).text, "jobs", "backlog") == "3"  # no count per view
        await history_of(client).sample()
        assert cell((await client.get("/")).text, "jobs", "backlog") == "5"


async def test_rates_come_from_the_change_between_samples(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    clock = memory_app.clock
    assert isinstance(clock, FakeClock)
    async with client_for(memory_app) as client:
        history = history_of(client)
        await history.sample()
        clock.advance(10)
        await memory_app.queue("jobs").send_batch(list(range(30)))
        await history.sample()
        page = (await client.get("/")).text
        assert (cell(page, "jobs", "in/s"), cell(page, "jobs", "out/s")) == ("3", "0")
        clock.advance(10)
        await memory_app.queue("jobs").purge()
        await history.sample()
        page = (await client.get("/")).text
        assert (cell(page, "jobs", "in/s"), cell(page, "jobs", "out/s")) == ("0", "3")


async def test_a_queue_page_peeks_at_messages_with_an_escaped_body_preview(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    await memory_app.queue("jobs").send({"to": "<script>alert(1)</script>", "n": 7})
    async with client_for(memory_app) as client:
        page = await client.get("/dashboard/queues/jobs")
        assert page.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>" not in page.text
        assert page.text.count('<tr data-message="') == 1
        assert "Pause delivery" in page.text and "Purge" in page.text
        assert (await client.get("/dashboard/queues/jobs?limit=0")).status_code == 400
        assert (await client.get("/dashboard/queues/jobs?limit=101")).status_code == 400
        missing = await client.get("/dashboard/queues/nowhere")
        assert missing.status_code == 404 and "nowhere" in missing.text
        assert missing.headers["content-type"].startswith("text/html")


async def test_the_message_browser_shows_each_messages_headers_escaped(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    await memory_app.queue("jobs").send({"n": 1}, headers={"traceparent": "00-abc-01", "x-who": "<b>me</b>"})
    await memory_app.queue("jobs").send({"n": 2})
    async with client_for(memory_app) as client:
        page = (await client.get("/dashboard/queues/jobs")).text
    assert "body (json) · 2 headers" in page
    assert "<dt><code>traceparent</code></dt><dd><code>00-abc-01</code></dd>" in page
    assert "&lt;b&gt;me&lt;/b&gt;" in page and "<b>me</b>" not in page
    assert page.count('<dl class="headers">') == 1  # the message without headers lists none


async def test_the_dead_letter_page_shows_each_error_attempts_source_and_time(
    memory_app: conveyor.App,
) -> None:
    for name in ("jobs", "jobs-dlq"):
        await memory_app.create_queue(name)
    await failing_consumer_dead_letters(memory_app, 2)
    async with client_for(memory_app) as client:
        page = (await client.get("/dashboard/queues/jobs-dlq")).text
    assert "Dead letters" in page
    # each error once as the dead letter's error (its headers repeat it, under the body)
    assert page.count('<span class="error-text">RuntimeError: the payment service is down</span>') == 2
    assert page.count('<a href="/dashboard/queues/jobs">jobs</a>') >= 2  # the source queue, per message
    assert page.count('data-label="attempts" data-value="1"') == 2
    assert "Replay the oldest to jobs" in page


async def test_purge_asks_for_confirmation_first(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    await memory_app.queue("jobs").send_batch([1, 2, 3])
    async with client_for(memory_app) as client:
        asked = await client.post("/dashboard/queues/jobs/purge")
        assert asked.status_code == 200 and "Purge jobs?" in asked.text
        assert 'name="confirm" value="yes"' in asked.text
        assert (await memory_app.queue("jobs").stats()).backlog == 3
        done = await client.post("/dashboard/queues/jobs/purge", data={"confirm": "yes"})
        assert done.status_code == 303
        after = await client.get(done.headers["location"])
        assert "Purged 3 message(s) from jobs." in after.text
    assert (await memory_app.queue("jobs").stats()).total == 0


async def test_replay_one_or_n_after_confirmation_and_refuse_bad_input(memory_app: conveyor.App) -> None:
    for name in ("jobs", "jobs-dlq"):
        await memory_app.create_queue(name)
    await failing_consumer_dead_letters(memory_app, 5)
    memory_app.consumers.clear()  # nothing consumes the replayed messages
    replay = "/dashboard/queues/jobs-dlq/replay"
    async with client_for(memory_app) as client:
        asked = await client.post(replay, data={"to": "jobs", "limit": "1"})
        assert asked.status_code == 200 and "Replay 1 to jobs" in asked.text
        assert (await memory_app.queue("jobs").stats()).total == 0
        one = await client.post(replay, data={"to": "jobs", "limit": "1", "confirm": "yes"})
        assert (
            "Replayed 1 message(s) from jobs-dlq to jobs." in (await client.get(one.headers["location"])).text
        )
        for bad in (
            {"to": "jobs", "limit": "0"},
            {"to": "jobs", "limit": "x"},
            {"to": "jobs-dlq"},
            {"to": "a b"},
        ):
            refused = await client.post(replay, data=bad | {"confirm": "yes"})
            assert refused.status_code == 400 and "Nothing was done" in refused.text
        unknown = await client.post(replay, data={"to": "job", "confirm": "yes"})
        assert unknown.status_code == 404
        assert (await memory_app.queue("jobs").stats()).total == 1
        await client.post(replay, data={"to": "jobs", "limit": "3", "confirm": "yes"})
        assert (await memory_app.queue("jobs").stats()).total == 4
        await client.post(replay, data={"to": "jobs", "limit": "", "confirm": "yes"})  # empty: all
    assert (await memory_app.queue("jobs").stats()).total == 5
    assert (await memory_app.queue("jobs-dlq").stats()).total == 0


async def test_pause_and_resume_from_the_queue_page(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    async with client_for(memory_app) as client:
        paused = await client.post("/dashboard/queues/jobs/pause")
        assert paused.status_code == 303
        page = (await client.get(paused.headers["location"])).text
        assert "Paused delivery of jobs" in page and "Resume delivery" in page
        assert (await memory_app.queue("jobs").stats()).paused
        await client.post("/dashboard/queues/jobs/resume")
    assert not (await memory_app.queue("jobs").stats()).paused


async def test_another_sites_page_cannot_purge(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    await memory_app.queue("jobs").send(1)
    async with client_for(memory_app) as client:
        refused = await client.post(
            "/dashboard/queues/jobs/purge",
            data={"confirm": "yes"},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
    assert refused.status_code == 403
    assert (await memory_app.queue("jobs").stats()).backlog == 1


async def test_topics_are_listed_with_their_subscriptions(memory_app: conveyor.App) -> None:
    for name in ("kitchen", "billing"):
        await memory_app.create_queue(name)
    await memory_app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    await memory_app.subscribe("orders", queue="billing")
    async with client_for(memory_app) as client:
        page = (await client.get("/")).text
        queue_page = (await client.get("/dashboard/queues/kitchen")).text
    topics = page[page.index('id="topics"') :]
    assert topics.count('<tr data-topic="orders">') == 2
    assert "ORDER_UP" in topics and "every type" in topics
    assert "subscribed to the topics orders" in queue_page


async def test_the_queue_page_runs_nothing_foreign(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    async with client_for(memory_app) as client:
        page = await client.get("/dashboard/queues/jobs")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "unsafe-inline" not in policy
    assert "<script" not in page.text


async def test_without_background_sampling_each_view_reads_the_queues(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs")
    async with client_for(memory_app, dashboard_sample_seconds=None) as client:
        assert history_of(client).readings() == []  # nothing read in the background
        await memory_app.queue("jobs").send_batch([1, 2])
        assert cell((await client.get("/")).text, "jobs", "backlog") == "2"
        await memory_app.queue("jobs").send(3)
        assert cell((await client.get("/")).text, "jobs", "backlog") == "3"


async def test_the_queue_page_states_its_backlog_limit(memory_app: conveyor.App) -> None:
    await memory_app.create_queue("jobs", max_backlog_messages=1_000, max_backlog_bytes=5_000)
    await memory_app.create_queue("free")
    async with client_for(memory_app) as client:
        bounded = (await client.get("/dashboard/queues/jobs")).text
        free = (await client.get("/dashboard/queues/free")).text
    assert "backlog limit 1,000 messages or 5,000 bytes" in bounded
    assert "no backlog limit" in free


async def test_delete_one_message_asks_for_confirmation_and_skips_leased_ones(
    memory_app: conveyor.App,
) -> None:
    await memory_app.create_queue("jobs")
    jobs = memory_app.queue("jobs")
    doomed = await jobs.send("doomed")
    ready = await jobs.send("ready")
    await jobs.pull(1)  # leases the oldest: `doomed`
    async with client_for(memory_app) as client:
        page = (await client.get("/dashboard/queues/jobs")).text
        # the leased message has no delete button; the other one has
        assert f"/dashboard/queues/jobs/messages/{doomed}/delete" not in page
        assert f"/dashboard/queues/jobs/messages/{ready}/delete" in page
        url = f"/dashboard/queues/jobs/messages/{ready}/delete"
        asked = await client.post(url)
        assert asked.status_code == 200 and f"Delete message {ready}?" in asked.text
        assert (await jobs.stats()).total == 2
        done = await client.post(url, data={"confirm": "yes"})
        assert done.status_code == 303
        assert "Deleted one message from jobs." in (await client.get(done.headers["location"])).text
        again = await client.post(url, data={"confirm": "yes"})
        assert "no longer in jobs" in (await client.get(again.headers["location"])).text
        leased_url = f"/dashboard/queues/jobs/messages/{doomed}/delete"
        refused = await client.post(leased_url, data={"confirm": "yes"})
        assert refused.status_code == 409 and "leased" in refused.text
        assert (await client.post("/dashboard/queues/jobs/messages/a.b/delete")).status_code == 400
    assert [m.id for m in await jobs.peek()] == [doomed]


async def has_workers(app: conveyor.App) -> bool:
    return bool(await conveyor.admin.recent_workers(app))


async def test_workers_seen_recently_are_listed_with_host_pid_queues_and_heartbeat(
    memory_app: conveyor.App,
) -> None:
    await memory_app.create_queue("jobs")

    @memory_app.consumer("jobs", max_concurrency=3)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        pass

    async with client_for(memory_app) as client:
        assert "No worker seen in the last 15 s" in (await client.get("/")).text
        worker = memory_app.worker()
        running = asyncio.create_task(worker.run())
        await worker.started.wait()
        try:
            await eventually(lambda: has_workers(memory_app), "the worker's first heartbeat")
            page = (await client.get("/")).text
        finally:
            worker.stop()
            await running
        after = (await client.get("/")).text
    section = page[page.index('id="workers"') :]
    match = re.search(rf'<tr data-worker="{re.escape(worker.info.id)}">.*?</tr>', section, re.S)
    assert match, section
    row_html = match.group(0)
    assert f">{worker.info.pid}<" in row_html and 'href="/dashboard/queues/jobs"' in row_html
    assert 'data-value="3"' in row_html and " ago" in row_html
    # a worker that stopped gracefully deletes its heartbeat
    assert "No worker seen" in after[after.index('id="workers"') :]


async def test_the_topics_page_lists_each_topic_with_its_subscriptions_and_types(
    memory_app: conveyor.App,
) -> None:
    async with client_for(memory_app) as client:
        assert "No topics yet" in (await client.get("/dashboard/topics")).text
        for name in ("kitchen", "billing", "ledger"):
            await memory_app.create_queue(name)
        await memory_app.subscribe("orders", queue="kitchen", types=["ORDER_UP", "ORDER_CANCELLED"])
        await memory_app.subscribe("orders", queue="billing")
        await memory_app.subscribe("audit", queue="ledger", types=["<script>"])
        await memory_app.queue("kitchen").send_batch([1, 2, 3])
        await history_of(client).sample()
        page = (await client.get("/dashboard/topics")).text
    orders = re.search(r'<section class="card" data-topic="orders">.*?</section>', page, re.S)
    assert orders, page
    kitchen = re.search(r'<tr data-subscription="kitchen">.*?</tr>', orders.group(0), re.S)
    billing = re.search(r'<tr data-subscription="billing">.*?</tr>', orders.group(0), re.S)
    assert kitchen and billing
    assert "ORDER_CANCELLED, ORDER_UP" in kitchen.group(0) and 'data-value="3"' in kitchen.group(0)
    assert "every type" in billing.group(0) and 'href="/dashboard/queues/billing"' in billing.group(0)
    assert "2 subscriptions" in orders.group(0)
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert '<a href="/dashboard/topics">Topics</a>' in page
