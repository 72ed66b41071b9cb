"""A few accounts and their smart links, and simulated visitors from many countries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from conveyor.demo.geo import PLACES, Place
from conveyor.demo.store import Link, Store

LINKS: tuple[Link, ...] = (
    Link(
        "spring-sale",
        "acme",
        "https://shop.acme.example/sale",
        {
            "FR": "https://shop.acme.example/fr/soldes",
            "DE": "https://shop.acme.example/de/angebote",
            "ES": "https://shop.acme.example/es/rebajas",
            "JP": "https://shop.acme.example/jp/sale",
        },
    ),
    Link("acme-careers", "acme", "https://jobs.acme.example/", {"IN": "https://jobs.acme.example/bengaluru"}),
    Link(
        "get-the-app",
        "globex",
        "https://globex.example/download",
        {
            "US": "https://apps.apple.example/globex",
            "GB": "https://apps.apple.example/globex",
            "IN": "https://play.google.example/globex",
            "BR": "https://play.google.example/globex",
            "ID": "https://play.google.example/globex",
        },
    ),
    Link("globex-docs", "globex", "https://docs.globex.example/", {}),
    Link(
        "launch-stream",
        "initech",
        "https://initech.example/live",
        {"CN": "https://initech.example/live/cn-mirror", "KR": "https://initech.example/live/apac"},
    ),
    Link("podcast-42", "initech", "https://pod.initech.example/episodes/42", {}),
)

# How often each link is opened, relative to the others.
LINK_WEIGHTS = (8, 2, 6, 3, 4, 2)
# Visitors per place, relative (roughly traffic, not population).
PLACE_WEIGHTS = (16, 3, 3, 5, 2, 7, 5, 6, 3, 3, 2, 1, 2, 2, 1, 1, 9, 5, 4, 2, 1, 2, 3, 1)
# Share of visits to a link that does not exist, and with no country header at all.
MISS_SHARE = 0.02
NO_COUNTRY_SHARE = 0.03


async def seed(store: Store) -> None:
    await store.add_links(LINKS)


@dataclass(frozen=True)
class Visit:
    path: str
    headers: dict[str, str]
    #: where the service should send this visitor (None for an unknown link)
    expected: str | None


def visits(count: int, *, rng: random.Random | None = None) -> list[Visit]:
    """`count` simulated visits: a link by popularity, a place by traffic, a little jitter."""
    rng = rng or random.Random()
    links = rng.choices(LINKS, LINK_WEIGHTS, k=count)
    places: list[Place] = rng.choices(PLACES, PLACE_WEIGHTS, k=count)
    out: list[Visit] = []
    for link, place in zip(links, places, strict=True):
        roll = rng.random()
        if roll < MISS_SHARE:
            out.append(Visit(f"/no-such-{rng.randrange(100)}", {"CF-IPCountry": place.country}, None))
            continue
        if roll < MISS_SHARE + NO_COUNTRY_SHARE:
            out.append(Visit(f"/{link.id}", {}, link.destination))
            continue
        headers = {
            "CF-IPCountry": place.country,
            "X-Latitude": f"{place.latitude + rng.uniform(-1.5, 1.5):.4f}",
            "X-Longitude": f"{place.longitude + rng.uniform(-1.5, 1.5):.4f}",
        }
        out.append(Visit(f"/{link.id}", headers, link.destination_for(place.country)))
    return out
