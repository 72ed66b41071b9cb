"""A few countries with a representative city: names for the page, places for simulated visitors."""

from __future__ import annotations

from typing import NamedTuple


class Place(NamedTuple):
    country: str  # ISO 3166-1 alpha-2
    name: str
    latitude: float
    longitude: float


PLACES: tuple[Place, ...] = (
    Place("US", "United States", 40.71, -74.01),
    Place("CA", "Canada", 43.65, -79.38),
    Place("MX", "Mexico", 19.43, -99.13),
    Place("BR", "Brazil", -23.55, -46.63),
    Place("AR", "Argentina", -34.60, -58.38),
    Place("GB", "United Kingdom", 51.51, -0.13),
    Place("FR", "France", 48.86, 2.35),
    Place("DE", "Germany", 52.52, 13.40),
    Place("ES", "Spain", 40.42, -3.70),
    Place("IT", "Italy", 41.90, 12.50),
    Place("NL", "Netherlands", 52.37, 4.90),
    Place("SE", "Sweden", 59.33, 18.07),
    Place("PL", "Poland", 52.23, 21.01),
    Place("NG", "Nigeria", 6.52, 3.38),
    Place("ZA", "South Africa", -33.92, 18.42),
    Place("EG", "Egypt", 30.04, 31.24),
    Place("IN", "India", 19.08, 72.88),
    Place("CN", "China", 31.23, 121.47),
    Place("JP", "Japan", 35.68, 139.69),
    Place("KR", "South Korea", 37.57, 126.98),
    Place("SG", "Singapore", 1.35, 103.82),
    Place("ID", "Indonesia", -6.21, 106.85),
    Place("AU", "Australia", -33.87, 151.21),
    Place("NZ", "New Zealand", -36.85, 174.76),
)

COUNTRY_NAMES = {place.country: place.name for place in PLACES}


def country_name(code: str) -> str:
    return COUNTRY_NAMES.get(code, "Unknown" if code in ("??", "XX") else code)
