"""Responses in Cloudflare's envelope, and the one table that maps errors to HTTP statuses.

Success: `{"success": true, "result": ..., "errors": [], "messages": []}`.
Failure: `{"success": false, "result": null, "errors": [{"code": ..., "message": ...}], "messages": []}`.
Every `code` is stable: clients branch on it, never on the message. On the native API a code is
conveyor's string (`queue_not_found`); under the Cloudflare mount (`/client/v4/...`) it is
Cloudflare's number for the same error (cloudflare_codes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from conveyor.errors import (
    AppClosed,
    BackendUnavailable,
    BatchCountTooLarge,
    BatchTooLarge,
    BodyNotSerializable,
    ConveyorError,
    ConveyorValueError,
    MessageLeased,
    MessageNotFound,
    MessageTooLarge,
    PartitionCountFixed,
    QueueAlreadyExists,
    QueueFull,
    QueueNotFound,
    QueuePaused,
    SubscriptionNotFound,
    TopicNotFound,
)
from conveyor.http.cloudflare_codes import cloudflare_code, cloudflare_code_of
from conveyor.limits import QUEUE_FULL_RETRY_AFTER_SECONDS

log = logging.getLogger("conveyor.http")

# conveyor's errors -> HTTP status; an error takes the entry of its nearest class (by MRO), so a
# new subclass of ConveyorValueError is a 400 without an entry of its own.
STATUS_BY_ERROR: Mapping[type[ConveyorError], int] = {
    QueueNotFound: 404,
    TopicNotFound: 404,
    SubscriptionNotFound: 404,
    QueueAlreadyExists: 409,
    QueuePaused: 409,
    MessageNotFound: 404,
    MessageLeased: 409,
    PartitionCountFixed: 409,  # the request is valid; the queue's own count says no
    QueueFull: 429,
    MessageTooLarge: 413,
    BatchTooLarge: 413,
    BatchCountTooLarge: 400,
    BodyNotSerializable: 400,
    ConveyorValueError: 400,
    BackendUnavailable: 503,
    AppClosed: 503,
    ConveyorError: 500,
}

# Codes of the API's own errors (conveyor's errors bring theirs: `ConveyorError.code`).
INVALID_INPUT = "invalid_input"
UNAUTHORIZED = "unauthorized"
CROSS_ORIGIN = "cross_origin"
REQUEST_TOO_LARGE = "request_too_large"
REQUEST_TIMEOUT = "request_timeout"
HOST_NOT_ALLOWED = "host_not_allowed"
TOKEN_IN_URL = "token_in_url"
OVERLOADED = "overloaded"
NOT_FOUND = "not_found"
# a queue without an HTTP pull consumer, asked for it
CONSUMER_NOT_FOUND = "consumer_not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
INTERNAL_ERROR = "internal_error"
CLIENT_DISCONNECTED = "client_disconnected"

# Where the Cloudflare-shaped API is mounted (cloudflare.py).
CLOUDFLARE_PREFIX = "/client/v4/"
# A paused queue's pull: Cloudflare answers it as a 429-type error (10252, queue disabled).
CLOUDFLARE_STATUS_BY_CODE = {"queue_paused": 429}

_HTTP_CODES = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: REQUEST_TOO_LARGE, 429: OVERLOADED}


class ApiError(Exception):
    """An error of the HTTP layer itself (bad JSON, no token, a body over the limit)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        cloudflare_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        #: the Cloudflare mount's number, when it is not the one `code` maps to
        self.cloudflare_code = cloudflare_code
        #: one message per problem (e.g. one per invalid field); the message alone when empty
        self.details = list(details) or [message]
        self.headers = dict(headers or {})


class JSONResponse(Response):
    """JSON rendered by pydantic-core: fast, and always valid JSON.

    conveyor refuses non-finite numbers in bodies; a NaN or Infinity stored before that (or by
    a foreign writer) is rendered as null rather than as a token no JSON parser accepts.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content, inf_nan_mode="null")


def ok(result: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "result": result, "errors": [], "messages": []}, status)


def is_cloudflare_path(path: str) -> bool:
    return path.startswith(CLOUDFLARE_PREFIX)


def failure(
    status: int,
    code: str,
    messages: Sequence[str],
    headers: Mapping[str, str] | None = None,
    *,
    path: str = "",
    cloudflare_number: int | None = None,
) -> JSONResponse:
    """An error envelope; for a request to the Cloudflare mount (`path`), with Cloudflare's numbers."""
    shown: str | int = code
    if is_cloudflare_path(path):
        shown = cloudflare_number if cloudflare_number is not None else cloudflare_code(code)
        status = CLOUDFLARE_STATUS_BY_CODE.get(code, status)
    errors = [{"code": shown, "message": message} for message in messages]
    document = {"success": False, "result": None, "errors": errors, "messages": []}
    return JSONResponse(document, status, headers=dict(headers or {}))


def status_of(exc: ConveyorError) -> int:
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - ConveyorError itself is in the table


def api_error_response(exc: ApiError, path: str = "") -> JSONResponse:
    return failure(
        exc.status, exc.code, exc.details, exc.headers, path=path, cloudflare_number=exc.cloudflare_code
    )


# -- Starlette exception handlers ---------------------------------------------------------------


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc, request.url.path)


async def handle_conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    # a full queue makes room as its consumers ack: the client may send again after a while
    headers = {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)} if isinstance(exc, QueueFull) else None
    return failure(
        status,
        exc.code,
        [" ".join(str(exc).split())],
        headers,
        path=request.url.path,
        cloudflare_number=cloudflare_code_of(exc),
    )


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, INVALID_INPUT if exc.status_code < 500 else INTERNAL_ERROR)
    return failure(exc.status_code, code, [str(exc.detail)], exc.headers, path=request.url.path)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    # the client hung up while sending its body: one line, since nothing failed on our side
    log.info("%s %s: the client disconnected while sending its body", request.method, request.url.path)
    return failure(400, CLIENT_DISCONNECTED, ["the client disconnected"], path=request.url.path)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback and re-raises after this response; the client learns nothing more
    return failure(500, INTERNAL_ERROR, ["internal error: see the server's log"], path=request.url.path)


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    ConveyorError: handle_conveyor_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}
