"""Which errors of a first connection to NATS waiting will not fix (an unknown host, a refused
port, rejected credentials), and their cause in one line. nats-py reports them to its error
callback and then raises NoServersError; a timeout can heal and stays BackendUnavailable."""

from __future__ import annotations

import socket

import nats.errors


def cannot_heal(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return False
    if isinstance(exc, socket.gaierror | ConnectionRefusedError | nats.errors.AuthorizationError):
        return True
    return isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower()


def cause(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
        return "authorization violation: the server rejected the user, password or token"
    return " ".join(str(exc).split()) or type(exc).__name__
