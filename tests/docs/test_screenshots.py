"""The screenshots the docs show are there, one per page and width (scripts/screenshots.py makes
them), and are as wide as their name says."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.support.browser import WIDTHS

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PAGES = ("dashboard", "dashboard-queue", "dashboard-dead-letters", "dashboard-topics", "analytics")


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("width", WIDTHS)
def test_each_page_has_a_screenshot_at_each_width(page: str, width: int) -> None:
    path = SCREENSHOTS / f"{page}-{width}.png"
    assert path.is_file(), f"{path.name} is missing: run scripts/screenshots.py"
    header = path.read_bytes()[:24]
    assert header.startswith(b"\x89PNG\r\n\x1a\n")
    (shown_width,) = struct.unpack(">I", header[16:20])  # IHDR's width
    assert shown_width == width
