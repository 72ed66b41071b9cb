"""The API's operations, declared once: each becomes a route and an entry of /openapi.json.

One Route per path dispatches on the method, so a 405 names (in `Allow`) every method the path
takes, not just one route's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    #: the request body's model; None: no body
    body: type[BaseModel] | None = None
    #: an empty body is allowed (every field takes its default)
    body_optional: bool = False
    #: the `result` of a successful envelope (a type pydantic can describe); None: `null`
    result: Any = None
    status: int = 200
    #: query parameters: name -> (JSON schema, description)
    query: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    #: a response that is not the JSON envelope: its media type (e.g. Prometheus' text)
    media_type: str | None = None
    #: answered without a token
    public: bool = False
    tags: tuple[str, ...] = ()


def routes(operations: Sequence[Operation]) -> list[BaseRoute]:
    by_path: dict[str, dict[str, Endpoint]] = {}
    for operation in operations:
        by_path.setdefault(operation.path, {})[operation.method] = operation.endpoint
    return [Route(path, _dispatch(endpoints), methods=list(endpoints)) for path, endpoints in by_path.items()]


def _dispatch(endpoints: dict[str, Endpoint]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return endpoint
