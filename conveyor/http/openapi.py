"""/openapi.json: the OpenAPI 3.1 document of the native API and the Cloudflare mount, built from
the operations' declarations (operations.py) and their pydantic models. The test suite runs
schemathesis against a live server with it."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from conveyor import limits as L
from conveyor.http.envelope import is_cloudflare_path
from conveyor.http.operations import Operation
from conveyor.http.responses import CloudflareErrorEnvelope, Envelope, ErrorEnvelope

REF_TEMPLATE = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
# Path parameters: their schema, and the example schemathesis (and readers) start from.
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "name": ({"type": "string", "pattern": f"^{L.QUEUE_NAME_PATTERN.pattern}$"}, "jobs"),
    "queue_id": ({"type": "string", "pattern": f"^{L.QUEUE_NAME_PATTERN.pattern}$"}, "jobs"),
    "account_id": ({"type": "string", "minLength": 1, "pattern": r"^[^/]+$"}, "local"),
    "topic": ({"type": "string", "pattern": f"^{L.QUEUE_NAME_PATTERN.pattern}$"}, "orders"),
    "queue": ({"type": "string", "pattern": f"^{L.QUEUE_NAME_PATTERN.pattern}$"}, "jobs"),
    "message_id": (
        {"type": "string", "pattern": f"^{L.MESSAGE_ID_PATTERN.pattern}$"},
        "0193a1b2c3d4e5f60718293a4b5c6d7e",
    ),
    "consumer_id": ({"type": "string", "pattern": "^[0-9a-f]{32}$"}, "0123456789abcdef0123456789abcdef"),
}
DESCRIPTIONS = {
    "name": "the queue's name",
    "queue_id": "the queue's queue_id (32 hex digits) or its name",
    "account_id": "any account id: a conveyor server is one account",
    "topic": "the topic's name",
    "queue": "the subscription queue's name",
    "message_id": "the message's id, as send returned it",
    "consumer_id": "the queue's HTTP pull consumer's consumer_id (32 hex digits; a queue has at most one)",
}


def _version() -> str:
    try:
        return importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


class _Components:
    """Collects the schemas of every model, referenced from the operations."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema_of(self, kind: Any, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(kind).json_schema(ref_template=REF_TEMPLATE, mode=mode)  # type: ignore[arg-type]
        for name, definition in schema.pop("$defs", {}).items():
            if self.schemas.setdefault(name, definition) != definition:
                # two models of one name (e.g. a native and a Cloudflare one): one would hide the other
                raise ValueError(f"two different schemas are named {name!r}: rename one model")
        return schema


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    components = _Components()
    native_error = components.schema_of(ErrorEnvelope, "serialization")
    cloudflare_error = components.schema_of(CloudflareErrorEnvelope, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        error = cloudflare_error if is_cloudflare_path(operation.path) else native_error
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, components, error
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "conveyor",
            "version": _version(),
            "description": "conveyor's HTTP API, and Cloudflare Queues' REST API under /client/v4 "
            "(docs/http.md). Every JSON answer is an envelope: {success, result, errors, messages}.",
        },
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(operation: Operation, components: _Components, error: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": f"{operation.method.lower()}_{_slug(operation.path)}",
        "parameters": _parameters(operation),
        "responses": {
            str(operation.status): _success(operation, components),
            "default": {"description": "an error", "content": {"application/json": {"schema": error}}},
        },
    }
    if operation.tags:
        document["tags"] = list(operation.tags)
    if operation.public:
        document["security"] = []
    if operation.body is not None:
        document["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": components.schema_of(operation.body, "validation")}},
        }
    return document


def _success(operation: Operation, components: _Components) -> dict[str, Any]:
    if operation.media_type is not None:
        return {"description": "ok", "content": {operation.media_type: {"schema": {"type": "string"}}}}
    schema = components.schema_of(Envelope[operation.result], "serialization")  # type: ignore[name-defined]
    return {"description": "ok", "content": {"application/json": {"schema": schema}}}


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    parameters = []
    for name in _PATH_PARAMETER.findall(operation.path):
        schema, example = PATH_PARAMETERS[name]
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": DESCRIPTIONS[name],
                "schema": schema,
                "example": example,
            }
        )
    for name, (schema, description) in operation.query.items():
        parameters.append(
            {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
        )
    return parameters


def _slug(path: str) -> str:
    return re.sub(
        r"[^A-Za-z0-9]+", "_", path.replace("/client/v4/accounts/{account_id}", "cloudflare")
    ).strip("_")
