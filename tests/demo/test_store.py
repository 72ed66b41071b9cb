"""The links and clicks tables: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.demo.models import LinkClickData, LinkMissData
from conveyor.demo.seed import LINKS
from conveyor.demo.store import Link, PostgresStore, SQLiteStore, Store, open_store
from tests.support.engines import unique_name
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_URL, need, port_open

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        await store.open()
        yield store
        await store.close()
        return
    need("psycopg", importlib.util.find_spec("psycopg") is not None, "pip install 'conveyor[postgres]'")
    need(
        "PostgreSQL",
        port_open(POSTGRES_HOST, POSTGRES_PORT),
        f"nothing listens on {POSTGRES_HOST}:{POSTGRES_PORT}",
    )
    schema = unique_name("linkclicks_test")
    store = open_store(f"{POSTGRES_URL}?schema={schema}")
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def click(link: Link, country: str | None, seconds: float, lat: float | None = 10.0) -> LinkClickData:
    return LinkClickData(
        id=link.id,
        accountId=link.account_id,
        country=country,
        destination=link.destination_for(country),
        latitude=lat,
        longitude=None if lat is None else 20.0,
        timestamp=T0 + dt.timedelta(seconds=seconds),
    )


def test_urls_choose_the_engine() -> None:
    assert isinstance(open_store("sqlite:///x.db"), SQLiteStore)
    postgres = open_store("postgresql://localhost/test?schema=app&connect_timeout=3")
    assert isinstance(postgres, PostgresStore)
    assert (postgres.schema, postgres.url) == ("app", "postgresql://localhost/test?connect_timeout=3")
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("mysql://localhost/x")


async def test_links_round_trip_with_their_country_destinations(store: Store) -> None:
    await store.add_links(LINKS)
    assert await store.get_link("spring-sale") == LINKS[0]
    assert await store.get_link("nope") is None
    edited = Link("spring-sale", "acme", "https://elsewhere.example/", {})
    await store.add_links([edited])
    assert await store.get_link("spring-sale") == edited


async def test_a_batch_of_clicks_is_stored_with_every_field(store: Store) -> None:
    sale, app = LINKS[0], LINKS[2]
    batch = [click(sale, "FR", 0), click(sale, "US", 1, lat=None), click(app, "IN", 61), click(app, None, 62)]
    assert await store.insert_clicks(batch) == 4
    assert await store.insert_clicks([]) == 0
    assert await store.count_clicks() == 4
    assert await store.counts_by("country", 10) == [("??", 1), ("FR", 1), ("IN", 1), ("US", 1)]
    assert dict(await store.counts_by("link_id", 10)) == {"spring-sale": 2, "get-the-app": 2}
    assert dict(await store.counts_by("destination", 10)) == {
        "https://shop.acme.example/fr/soldes": 1,
        "https://shop.acme.example/sale": 1,
        "https://play.google.example/globex": 1,
        "https://globex.example/download": 1,
    }
    assert await store.locations(10) == [(10.0, 20.0, 3)]
    start = T0.timestamp()
    assert await store.first_click_at() == start
    assert await store.timeline(start, 60) == [(start, 2), (start + 60, 2)]
    delays = await store.click_delays()
    assert len(delays) == 4 and all(delay > 0 for delay in delays)


async def test_misses_and_totals(store: Store) -> None:
    await store.add_links(LINKS)
    await store.insert_clicks([click(LINKS[0], "FR", 0)])
    assert await store.insert_misses([LinkMissData(id="typo", country="BR", timestamp=T0)]) == 1
    assert await store.totals() == {"clicks": 1, "misses": 1, "links": len(LINKS), "accounts": 3}


async def test_grouping_by_an_unknown_column_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot group clicks by"):
        await store.counts_by("1; DROP TABLE links", 5)
