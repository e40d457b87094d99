"""The OpenAPI 3.1 document, made from the endpoints' own pydantic models.

The schemas are pydantic's JSON Schema (``models_json_schema``, which OpenAPI 3.1 takes as it
is), with references into ``#/components/schemas``; path parameters come from each endpoint's
path model, one parameter per field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shopapi.models import Errors

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None
    answer: type[BaseModel]
    path_model: type[BaseModel] | None = None
    # Answers other than 200 and the ones every authenticated endpoint has.
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=())


# What each refusal means, for the document.
STATUS = {
    400: "The body is not JSON",
    401: "No token, or a token that is not configured",
    404: "What the path names does not exist",
    409: "The request conflicts with the store (e.g. an id that exists with other content)",
    413: "The body is larger than the limit",
    422: "A field is invalid (one message per field); nothing was written",
    429: "Too many requests for this token: see Retry-After",
    503: "The store is busy with another writer; nothing written, try again",
}
COMMON = (400, 401, 413, 422, 429, 503)


def document(endpoints: Iterable[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    endpoints = list(endpoints)
    inputs = {e.body for e in endpoints if e.body is not None}
    outputs = {e.answer for e in endpoints} | {Errors}
    keys: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in inputs] + [
        (m, "serialization") for m in outputs
    ]
    refs, defs = models_json_schema(
        sorted(keys, key=lambda k: (k[0].__name__, k[1])), ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": f"{e.method.lower()}_{e.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            ).replace("}", ""),
            "security": [{"bearer": []}],
            "responses": {
                "200": {
                    "description": "Done (or already done: the same request again changes nothing)",
                    "content": {"application/json": {"schema": refs[(e.answer, "serialization")]}},
                }
            },
        }
        if e.tags:
            op["tags"] = list(e.tags)
        if e.path_model is not None:
            schema = e.path_model.model_json_schema()
            op["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": _plain(prop)}
                for name, prop in schema["properties"].items()
            ]
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
            }
        for status in sorted(set(COMMON) | set(e.errors)):
            op["responses"][str(status)] = {
                "description": STATUS[status],
                "content": {"application/json": {"schema": refs[(Errors, "serialization")]}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k != "title"}
