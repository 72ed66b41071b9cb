"""The smart-link service: the right destination per country, 404 for an unknown link."""

from __future__ import annotations

import pytest

from conveyor.demo.models import LinkClick, LinkMiss
from conveyor.demo.service import Visitor
from tests.demo.conftest import Pipeline

SALE = "https://shop.acme.example/sale"


@pytest.mark.parametrize(
    ("path", "headers", "destination"),
    [
        ("/spring-sale", {"CF-IPCountry": "FR"}, "https://shop.acme.example/fr/soldes"),
        ("/spring-sale", {"CF-IPCountry": "DE"}, "https://shop.acme.example/de/angebote"),
        ("/spring-sale", {"CF-IPCountry": "jp"}, "https://shop.acme.example/jp/sale"),
        ("/spring-sale", {"CF-IPCountry": "US"}, SALE),
        ("/spring-sale", {"CF-IPCountry": "XX"}, SALE),
        ("/spring-sale", {"CF-IPCountry": "not a country"}, SALE),
        ("/spring-sale", {}, SALE),
        ("/get-the-app", {"CF-IPCountry": "IN"}, "https://play.google.example/globex"),
        ("/get-the-app", {"CF-IPCountry": "US"}, "https://apps.apple.example/globex"),
        ("/get-the-app", {"CF-IPCountry": "FR"}, "https://globex.example/download"),
        ("/globex-docs", {"CF-IPCountry": "FR"}, "https://docs.globex.example/"),
    ],
)
async def test_redirect_picks_the_destination_for_the_visitors_country(
    pipeline: Pipeline, path: str, headers: dict[str, str], destination: str
) -> None:
    response = await pipeline.client.get(path, headers=headers)
    assert response.status_code == 302
    assert response.headers["location"] == destination


async def test_the_click_event_records_who_went_where(pipeline: Pipeline) -> None:
    headers = {"CF-IPCountry": "FR", "X-Latitude": "48.8566", "X-Longitude": "2.3522"}
    await pipeline.client.get("/spring-sale", headers=headers)
    await pipeline.sender.flush()
    [message] = await pipeline.app.queue("link-clicks").peek()
    event = LinkClick.model_validate(message.body)
    assert event.data.id == "spring-sale"
    assert event.data.accountId == "acme"
    assert event.data.country == "FR"
    assert event.data.destination == "https://shop.acme.example/fr/soldes"
    assert (event.data.latitude, event.data.longitude) == (48.8566, 2.3522)
    assert event.data.timestamp.tzinfo is not None


async def test_an_unknown_link_is_a_404_page_and_a_miss_event(pipeline: Pipeline) -> None:
    response = await pipeline.client.get("/no-such-link", headers={"CF-IPCountry": "BR"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "no-such-link" in response.text and response.headers["content-type"].startswith("text/html")
    await pipeline.sender.flush()
    [message] = await pipeline.app.queue("link-clicks").peek()
    miss = LinkMiss.model_validate(message.body)
    assert (miss.data.id, miss.data.country) == ("no-such-link", "BR")


async def test_the_404_page_escapes_the_link_id(pipeline: Pipeline) -> None:
    response = await pipeline.client.get("/%3Cscript%3Ealert(1)")
    assert response.status_code == 404
    assert "<script>alert" not in response.text and "&lt;script&gt;alert(1)" in response.text


async def test_a_path_that_cannot_be_a_link_gets_the_same_404_page(pipeline: Pipeline) -> None:
    response = await pipeline.client.get("/a/b")
    assert response.status_code == 404
    assert "There is no link" in response.text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"cf-ipcountry": "fr", "x-latitude": "48.85", "x-longitude": "2.35"}, Visitor("FR", 48.85, 2.35)),
        ({"cf-ipcountry": "XX"}, Visitor(None, None, None)),
        ({"cf-ipcountry": "FRA", "x-latitude": "91", "x-longitude": "nan"}, Visitor(None, None, None)),
        ({"x-latitude": "north", "x-longitude": "-181"}, Visitor(None, None, None)),
        ({"cf-iplatitude": "-33.9", "cf-iplongitude": "18.4"}, Visitor(None, -33.9, 18.4)),
    ],
)
def test_visitor_is_read_from_the_documented_headers(headers: dict[str, str], expected: Visitor) -> None:
    assert Visitor.from_headers(headers) == expected
