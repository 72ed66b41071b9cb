"""Which errors of a first connection to Redis waiting will not fix (an unknown host, a refused
port, rejected credentials, a database index the server does not have), and their cause in one
line. A timeout or a server still loading its data can heal: those stay BackendUnavailable."""

from __future__ import annotations

import os
import re

import redis.exceptions as redis_errors

# redis-py's "Error 111 connecting to host:6379. Connect call failed (...)."
_CONNECT_ERROR = re.compile(r"^Error (-?\d+) connecting to \S+?\.?\s+(.*?)\.?$", re.S)


def cannot_heal(exc: BaseException) -> bool:
    if isinstance(exc, redis_errors.TimeoutError | redis_errors.BusyLoadingError):
        return False
    return isinstance(exc, redis_errors.ConnectionError | redis_errors.ResponseError)


def cause(exc: BaseException) -> str:
    """'Connection refused', 'unknown host (Name or service not known)', the server's own words."""
    text = " ".join(str(exc).split())
    match = _CONNECT_ERROR.match(text)
    if match is None:
        return text or type(exc).__name__
    number, detail = int(match[1]), match[2]
    if number < 0:  # getaddrinfo's codes are negative
        return f"unknown host ({detail})"
    return os.strerror(number)
