"""End to end in one process: visits → background sends → Router → bulk INSERT → rows."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import conveyor
from conveyor.demo.consumer import DEAD_LETTER_QUEUE, QUEUE
from conveyor.demo.seed import visits
from tests.demo.conftest import Pipeline, open_pipeline
from tests.support.engines import unique_name
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_URL, need, port_open

BURST = 300


async def play(pipeline: Pipeline, count: int, *, seed: int = 7, concurrency: int = 20) -> tuple[int, int]:
    """Play `count` simulated visits concurrently; returns (redirects, 404s)."""
    planned = visits(count, rng=random.Random(seed))
    limit = asyncio.Semaphore(concurrency)

    async def one(path: str, headers: dict[str, str]) -> int:
        async with limit:
            return (await pipeline.client.get(path, headers=headers)).status_code

    codes = Counter(await asyncio.gather(*(one(v.path, v.headers) for v in planned)))
    assert set(codes) <= {302, 404}
    return codes[302], codes[404]


async def test_a_burst_of_visits_ends_with_exactly_one_row_per_click(pipeline: Pipeline) -> None:
    redirects, misses = await play(pipeline, BURST)
    assert redirects + misses == BURST and misses > 0  # the simulation includes mistyped links
    handled = await pipeline.settle()
    assert handled == BURST
    totals = await pipeline.store.totals()
    assert (totals["clicks"], totals["misses"]) == (redirects, misses)
    assert pipeline.sender.failed == 0 and pipeline.sender.sent == BURST
    assert (await pipeline.app.queue(QUEUE).stats()).total == 0
    assert (await pipeline.app.queue(DEAD_LETTER_QUEUE).stats()).total == 0


async def test_the_burst_lands_in_postgresql_when_the_store_url_says_so(tmp_path: Path) -> None:
    need("psycopg", importlib.util.find_spec("psycopg") is not None, "pip install 'conveyor[postgres]'")
    need(
        "PostgreSQL",
        port_open(POSTGRES_HOST, POSTGRES_PORT),
        f"nothing listens on {POSTGRES_HOST}:{POSTGRES_PORT}",
    )
    schema = unique_name("linkclicks_test")
    try:
        async with open_pipeline(tmp_path, f"{POSTGRES_URL}?schema={schema}") as pipeline:
            redirects, misses = await play(pipeline, BURST)
            assert await pipeline.settle() == BURST
            totals = await pipeline.store.totals()
            assert (totals["clicks"], totals["misses"]) == (redirects, misses)
    finally:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_rows_hold_what_the_visitor_did(pipeline: Pipeline) -> None:
    planned = [v for v in visits(60, rng=random.Random(3)) if v.expected is not None]
    for v in planned:
        await pipeline.client.get(v.path, headers=v.headers)
    await pipeline.settle()
    by_destination = dict(await pipeline.store.counts_by("destination", 100))
    assert by_destination == dict(Counter(v.expected for v in planned))
    by_country = dict(await pipeline.store.counts_by("country", 100))
    assert by_country == dict(Counter(v.headers.get("CF-IPCountry", "??") for v in planned))


async def test_an_invalid_event_lands_in_the_dead_letter_queue(pipeline: Pipeline) -> None:
    await pipeline.client.get("/spring-sale", headers={"CF-IPCountry": "FR"})
    raw = pipeline.app.queue(QUEUE)  # no schema: the body goes in as it is, as a foreign producer's would
    await raw.send({"type": "LINK_CLICK", "data": {"id": "spring-sale", "country": "Narnia"}})
    await raw.send({"type": "LINK_TELEPORT", "data": {}})
    await pipeline.settle()
    assert await pipeline.store.count_clicks() == 1
    dead = await pipeline.app.queue(DEAD_LETTER_QUEUE).peek(10)
    assert len(dead) == 2
    for letter in dead:
        assert letter.dead_letter is not None
        assert letter.dead_letter.attempts == 1  # dead-lettered at once, never retried
        assert "invalid message" in letter.dead_letter.error
    assert {letter.body["type"] for letter in dead} == {"LINK_CLICK", "LINK_TELEPORT"}


async def test_a_store_that_fails_retries_the_batch_then_dead_letters_it(pipeline: Pipeline) -> None:
    await pipeline.client.get("/spring-sale", headers={"CF-IPCountry": "FR"})
    await pipeline.sender.flush()

    @pipeline.worker.lifespan
    async def broken_store(env: conveyor.Env) -> AsyncIterator[None]:
        class Broken:
            async def insert_clicks(self, clicks: object) -> int:
                raise ConnectionError("the database is down")

        env.store = Broken()
        yield

    await pipeline.settle()
    [letter] = await pipeline.app.queue(DEAD_LETTER_QUEUE).peek(10)
    assert letter.dead_letter is not None
    assert letter.dead_letter.attempts == 4  # max_retries=3: four deliveries in all
    assert "the database is down" in letter.dead_letter.error
    assert await pipeline.store.count_clicks() == 0
