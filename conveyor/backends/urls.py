"""Engine URLs as users see them: with any password hidden."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
