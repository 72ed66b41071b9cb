"""Typed messages: LINK_CLICK events validated by a pydantic union and bulk-inserted by a Router.

Run it with `python examples/typed_clicks.py`. It works on a temporary SQLite file and shows
1. a typed queue refusing a bad click before anything is sent,
2. a Router handing every valid click of a batch to one handler (one bulk INSERT),
3. a malformed body from an untyped producer dead-lettered with its validation error, never retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

import conveyor
from conveyor.testing import drain

# -- the events: the wire format is camelCase, the Python side snake_case ------------------------


class LinkClickData(BaseModel):
    model_config = ConfigDict(populate_by_name=True)  # LinkClickData(account_id=...) works too

    id: str  # the link's id
    account_id: str = Field(alias="accountId")
    country: str | None
    destination: str
    latitude: float | None
    longitude: float | None
    timestamp: dt.datetime


class LinkClick(BaseModel):
    type: Literal["LINK_CLICK"]
    data: LinkClickData


class LinkMiss(BaseModel):
    """A visit to a link that does not exist."""

    type: Literal["LINK_MISS"]
    id: str


QueueMessage = Annotated[LinkClick | LinkMiss, Field(discriminator="type")]

# -- the consumer ------------------------------------------------------------------------------

router = conveyor.Router(QueueMessage)


@router.on(LinkClick, batch=True)
async def store_clicks(events: list[LinkClick], env: conveyor.Env) -> None:
    """Every click of the batch in one INSERT."""
    env.db.executemany(
        "INSERT INTO link_clicks (link_id, account_id, country, destination, clicked_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (e.data.id, e.data.account_id, e.data.country, e.data.destination, e.data.timestamp.isoformat())
            for e in events
        ],
    )
    env.db.commit()
    print(f"  stored a batch of {len(events)} clicks")


@router.on(LinkMiss)
async def note_miss(event: LinkMiss, env: conveyor.Env) -> None:
    print(f"  a visitor asked for the unknown link {event.id!r}")


def click(n: int, country: str | None = "DE") -> LinkClick:
    return LinkClick(
        type="LINK_CLICK",
        data=LinkClickData(
            id=f"link-{n % 2}",
            account_id="acct-1",
            country=country,
            destination="https://example.com/",
            latitude=52.52,
            longitude=13.40,
            timestamp=dt.datetime.now(dt.UTC),
        ),
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = conveyor.App(f"sqlite:///{Path(folder) / 'queue.db'}")

        @app.lifespan
        async def database(env: conveyor.Env) -> AsyncIterator[None]:
            env.db = sqlite3.connect(Path(folder) / "analytics.db")
            env.db.execute(
                "CREATE TABLE IF NOT EXISTS link_clicks"
                " (link_id TEXT, account_id TEXT, country TEXT, destination TEXT, clicked_at TEXT)"
            )
            try:
                yield
            finally:
                env.db.close()

        app.consumer("link-clicks", max_batch_size=10, dead_letter_queue="link-clicks-dlq")(router)

        async with app:
            clicks = app.queue("link-clicks", schema=QueueMessage)
            await clicks.send(click(0))  # a model ...
            await clicks.send_batch([click(n, country=None) for n in range(1, 3)])
            await clicks.send(click(3).model_dump(mode="json", by_alias=True))  # ... or the wire dict
            await clicks.send({"type": "LINK_CLICK", "data": {**click(4).data.model_dump(by_alias=True)}})
            await clicks.send(LinkMiss(type="LINK_MISS", id="no-such-link"))
            print("sent 6 valid events; the wire format:", (await clicks.peek(1))[0].body)

            wire = click(5).model_dump(mode="json", by_alias=True)
            del wire["data"]["accountId"]
            try:
                await clicks.send(wire)
            except conveyor.MessageValidationError as exc:
                print("typed send refused a click:", [(e["loc"], e["msg"]) for e in exc.errors])

            # an untyped producer (another service, the HTTP API) is not validated; the Router is
            wire = click(6).model_dump(mode="json", by_alias=True)
            wire["data"]["latitude"] = "north"
            await app.queue("link-clicks").send(wire)

            print("consuming:")
            await drain(app)

            with sqlite3.connect(Path(folder) / "analytics.db") as db:
                rows = db.execute("SELECT link_id, count(*) FROM link_clicks GROUP BY link_id").fetchall()
            total = sum(count for _, count in rows)
            print(f"stored {total} clicks: {dict(rows)}")
            for letter in await app.queue("link-clicks-dlq").peek():
                assert letter.dead_letter is not None
                print(f"dead letter after {letter.dead_letter.attempts} attempt: {letter.dead_letter.error}")
            for label, counters in router.stats.by_type().items():
                print(f"counters {label}: {counters}")
            assert total == 5
            assert (await clicks.stats()).total == 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
