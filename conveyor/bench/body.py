"""The message every case sends: a link-click event like the flagship demo's (about 180 bytes)."""

from __future__ import annotations

import json
from typing import Any


def click(n: int) -> dict[str, Any]:
    return {
        "type": "LINK_CLICK",
        "data": {
            "link_id": f"lnk_{n % 1000:04d}",
            "n": n,
            "country": "FR",
            "referrer": "https://example.com/some/page",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        },
    }


def click_bytes(n: int) -> bytes:
    """The same event as JSON bytes, for the raw clients."""
    return json.dumps(click(n), separators=(",", ":")).encode()
