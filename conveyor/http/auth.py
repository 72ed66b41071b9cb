"""Who may call: a bearer token, no token in a URL, and no cross-site browser writes.

The token is compared in constant time and never logged. API routes take exactly
`Authorization: Bearer <token>`. A browser cannot add a bearer header to a page load, so the
dashboard's pages (and only they) also take HTTP Basic auth with the token as the password (any
user name): the browser asks for it once. Without a token (a loopback bind only, enforced by
`conveyor serve`) anyone on the machine may call.

Every write from a browser must come from the API's own origin: a page on another site cannot
make a visitor's browser send, purge or replay (cross-site request forgery), token or not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Collection
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.http.envelope import CROSS_ORIGIN, TOKEN_IN_URL, UNAUTHORIZED, failure

# Answered without a token: a load balancer's probe carries none.
PUBLIC_PATHS = frozenset({"/healthz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Query parameters that look like a credential: refused, because a URL lands in access logs,
# proxies' logs and browser history.
TOKEN_QUERY_PARAMETERS = frozenset({"token", "access_token", "api_token", "api_key", "apikey", "auth"})
BEARER_PREFIX = "Bearer "
BASIC_PREFIX = "Basic "


def is_dashboard_path(path: str) -> bool:
    """The dashboard's pages, where a browser may authenticate with HTTP Basic."""
    return path == "/" or path.startswith("/dashboard/")


def check_token(token: str) -> None:
    """A token must be sendable as `Bearer <token>`: printable ASCII, no spaces."""
    if not token:
        raise ValueError("the token must not be empty: pass None to serve without auth")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("the token must be printable ASCII without spaces (it travels in a header)")


def bearer_token(authorization: str) -> str | None:
    """The token of exactly `Bearer <token>` (one space, nothing around it); None otherwise."""
    if not authorization.startswith(BEARER_PREFIX):
        return None
    token = authorization[len(BEARER_PREFIX) :]
    if not token or any(char.isspace() for char in token):
        return None
    return token


def basic_password(authorization: str) -> str | None:
    """The password of `Basic base64(user:password)`; None otherwise."""
    if not authorization.startswith(BASIC_PREFIX):
        return None
    try:
        decoded = base64.b64decode(authorization[len(BASIC_PREFIX) :], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def token_in_query(query_string: bytes) -> bool:
    """True when the URL carries a parameter named like a credential."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return any(name.lower() in TOKEN_QUERY_PARAMETERS for name, _ in pairs)


class RefuseTokenInUrl:
    """ASGI middleware: 400 `token_in_url` for a URL with a credential-like query parameter.

    Refused whether or not the server has a token: the point is to teach the client before its
    secret spreads through logs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not token_in_query(scope.get("query_string", b"")):
            await self.app(scope, receive, send)
            return
        response = failure(
            400,
            TOKEN_IN_URL,
            ["a token in a URL ends up in logs and browser history: send `Authorization: Bearer <token>`"],
            path=scope["path"],
        )
        await response(scope, receive, send)


class RequireToken:
    """ASGI middleware: 401 unless the request carries the token (PUBLIC_PATHS excepted)."""

    def __init__(self, app: ASGIApp, token: str, public_paths: Collection[str] = PUBLIC_PATHS) -> None:
        check_token(token)
        self.app = app
        self._token = token.encode()
        self.public_paths = public_paths

    def __repr__(self) -> str:
        return "RequireToken(<hidden>)"  # the token never reaches a log, not even through a repr

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        dashboard = is_dashboard_path(scope["path"])
        challenge = 'Basic realm="conveyor", charset="UTF-8"' if dashboard else 'Bearer realm="conveyor"'
        response = failure(
            401,
            UNAUTHORIZED,
            ["missing or wrong token: send the header `Authorization: Bearer <token>`"],
            {"WWW-Authenticate": challenge},
            path=scope["path"],
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        authorization = Headers(scope=scope).get("authorization", "")
        token = bearer_token(authorization)
        if token is None and is_dashboard_path(scope["path"]):
            token = basic_password(authorization)
        # compare_digest wants ASCII on str; bytes take any token a client sends
        return token is not None and hmac.compare_digest(token.encode(), self._token)


def _own_host(headers: Headers) -> str:
    return headers.get("host", "").lower()


class SameOriginWrites:
    """ASGI middleware: 403 for a write a browser makes on behalf of another site.

    Browsers name the page that made a request in `Origin` (and, lately, `Sec-Fetch-Site`);
    clients such as curl send neither and pass. Only the host is compared, so a proxy that
    terminates TLS in front of the API changes nothing. (A page that reached the API by DNS
    rebinding is same-origin to the browser: hosts.AllowedHosts refuses it by its Host.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self._same_origin(scope):
            await self.app(scope, receive, send)
            return
        response = failure(
            403, CROSS_ORIGIN, ["a write from another site's page is refused"], path=scope["path"]
        )
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
