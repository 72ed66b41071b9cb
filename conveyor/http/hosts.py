"""Which names the API answers to: the defence against DNS rebinding.

A page on evil.example whose DNS name is re-pointed at 127.0.0.1 makes the visitor's browser
call a loopback server with `Host: evil.example`. To the browser that is the page's own origin,
so no cross-site check sees it; only the Host header tells. The API answers only the names it
is reached by: the loopback names always, plus the names given (`--allowed-host`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.http.envelope import HOST_NOT_ALLOWED, failure

# Names only this machine can be reached by (an IP of 127.0.0.0/8 or ::1 also counts).
LOOPBACK_NAMES = frozenset({"localhost"})
# An allowed host of "*" answers any name; ".example.com" answers example.com and its subdomains.
ANY_HOST = "*"
# Answered whatever the Host: a load balancer's or kubelet's probe uses the machine's address.
HOST_EXEMPT_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """True for a name or address only this machine can reach: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for a bind address that listens on every interface (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name of a Host header without its port, lower-cased; None when it is malformed."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8787
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name or None
    name, colon, port = header.partition(":")
    if colon and not port.isdigit():
        return None
    return name or None


class HostPolicy:
    """The names the API answers: loopback names always, and `allowed` (exact, `.domain`, or `*`)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        names = []
        for entry in allowed:
            if not isinstance(entry, str) or not entry.strip() or any(c.isspace() for c in entry):
                raise ValueError(f"an allowed host must be a name without spaces, got {entry!r}")
            names.append(entry.strip().lower().strip("[]"))
        self.any = ANY_HOST in names
        self.exact = frozenset(name for name in names if not name.startswith("."))
        self.domains = tuple(name for name in names if name.startswith("."))

    def allows(self, name: str) -> bool:
        if self.any or name in self.exact or is_loopback(name):
            return True
        return any(name == domain[1:] or name.endswith(domain) for domain in self.domains)

    def describe(self) -> str:
        if self.any:
            return "any"
        return ", ".join(["loopback", *sorted(self.exact), *self.domains])


class AllowedHosts:
    """ASGI middleware: 400 `host_not_allowed` for a Host the policy does not name."""

    def __init__(
        self, app: ASGIApp, policy: HostPolicy, exempt_paths: Collection[str] = HOST_EXEMPT_PATHS
    ) -> None:
        self.app = app
        self.policy = policy
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths or self.policy.any:
            await self.app(scope, receive, send)
            return
        name = host_name(Headers(scope=scope).get("host", ""))
        if name is not None and self.policy.allows(name):
            await self.app(scope, receive, send)
            return
        shown = "no Host header" if name is None else f"the host {name[:80]!r}"
        response = failure(
            400,
            HOST_NOT_ALLOWED,
            [
                f"this server does not answer to {shown}: call it by a name it was started with "
                "(`conveyor serve --allowed-host NAME`)"
            ],
            path=scope["path"],
        )
        await response(scope, receive, send)
