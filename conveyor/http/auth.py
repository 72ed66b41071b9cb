"""Who may call: a bearer token, and no cross-site browser writes.

The token is compared in constant time and never logged. A browser cannot add a bearer header
to a page load, so the dashboard also takes HTTP Basic auth with the token as the password (any
user name): the browser asks for it once. Without a token (a loopback bind only, enforced by
`conveyor serve`) anyone on the machine may call.

Every write from a browser must come from the API's own origin: a page on another site cannot
make a visitor's browser send, purge or replay (cross-site request forgery), token or not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.http.envelope import CROSS_ORIGIN, UNAUTHORIZED, failure

# Answered without a token: a load balancer's probe carries none.
PUBLIC_PATHS = frozenset({"/healthz"})
# The dashboard's pages: a 401 there asks for Basic auth, so the browser prompts for the token.
DASHBOARD_PATHS = ("/", "/dashboard")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """True for a bind only this machine can reach: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def presented_token(authorization: str) -> str | None:
    """The token of `Bearer <token>`, or the password of `Basic base64(user:token)`."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class RequireToken:
    """ASGI middleware: 401 unless the request carries the token (PUBLIC_PATHS excepted)."""

    def __init__(self, app: ASGIApp, token: str, public_paths: Collection[str] = PUBLIC_PATHS) -> None:
        if not token:
            raise ValueError("the token must not be empty")
        self.app = app
        self._token = token.encode()
        self.public_paths = public_paths

    def __repr__(self) -> str:
        return "RequireToken(<hidden>)"  # the token never reaches a log, not even through a repr

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        browser = scope["path"] == "/" or scope["path"].startswith(DASHBOARD_PATHS[1])
        challenge = 'Basic realm="conveyor", charset="UTF-8"' if browser else 'Bearer realm="conveyor"'
        response = failure(
            401,
            UNAUTHORIZED,
            ["missing or wrong token: send the header `Authorization: Bearer <token>`"],
            {"WWW-Authenticate": challenge},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        token = presented_token(Headers(scope=scope).get("authorization", ""))
        return token is not None and hmac.compare_digest(token.encode(), self._token)


def _own_host(headers: Headers) -> str:
    return headers.get("host", "").lower()


class SameOriginWrites:
    """ASGI middleware: 403 for a write a browser makes on behalf of another site.

    Browsers name the page that made a request in `Origin` (and, lately, `Sec-Fetch-Site`);
    clients such as curl send neither and pass. Only the host is compared, so a proxy that
    terminates TLS in front of the API changes nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self._same_origin(scope):
            await self.app(scope, receive, send)
            return
        response = failure(403, CROSS_ORIGIN, ["a write from another site's page is refused"])
        await response(scope, receive, send)

    @staticmethod
    def _same_origin(scope: Scope) -> bool:
        headers = Headers(scope=scope)
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        origin = headers.get("origin")
        if origin is None:
            return True
        return urlsplit(origin).netloc.lower() == _own_host(headers)
