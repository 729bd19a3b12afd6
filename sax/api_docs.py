"""How both apps present themselves to API consumers.

- Swagger UI at ``/docs`` and ReDoc at ``/redoc`` are served from the ``fastapi-offline``
  package's own copy of their scripts and styles (under ``/static-offline-docs``), never from a
  CDN, so the pages render in an air-gapped cluster.
- Operation ids are the names generated clients give their functions, so they read as calls:
  a Saxml method route is named after its method (``lm.generate`` -> ``lm_generate``), any other
  route after its ``operation_id`` or its handler (``publish``, ``list_models``).
- The spec documents no 422: sax answers a request that fails validation with 400 and its own
  error body, so FastAPI's 422 and its ``HTTPValidationError`` would only mislead clients.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic.warnings import UnsupportedFieldAttributeWarning


def operation_id(route: APIRoute) -> str:
    """``lm_generate`` for ``POST /v1/models/{name}/lm.generate``; else the handler's name."""
    last = route.path_format.rsplit("/", 1)[-1]
    if "." in last and "{" not in last:
        return last.replace(".", "_")
    return route.name


def without_validation_422(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (changed in place) without 422 responses, and without FastAPI's validation error
    schemas once nothing refers to them."""
    for path in spec.get("paths", {}).values():
        for op in path.values():
            op.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    text = json.dumps({k: v for k, v in spec.items() if k != "components"})
    for name in ("HTTPValidationError", "ValidationError"):
        others = json.dumps({k: v for k, v in schemas.items() if k != name})
        if f"#/components/schemas/{name}" not in text + others:
            schemas.pop(name, None)
    return spec


def optional_bearer(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (changed in place) with the bearer scheme optional on every operation: a cell
    with auth off, and ACLs that admit everyone, need no token (``security: [{}, bearer]``)."""
    for path in spec.get("paths", {}).values():
        for op in path.values():
            security = op.get("security")
            if security and {} not in security:
                op["security"] = [{}, *security]
    return spec


def _ignore_body_alias_warning() -> None:
    """Silences pydantic's UnsupportedFieldAttributeWarning about FastAPI's body aliases, for
    the whole process: FastAPI passes each body parameter's name as an alias to pydantic, which
    warns for union-typed and explicit bodies when it builds their validators (at spec time, or
    at the first request of a route whose models defer their build), although validation and
    the spec come out right; it would only be noise in the servers' logs."""
    warnings.filterwarnings(
        "ignore",
        message="The 'alias' attribute with value",
        category=UnsupportedFieldAttributeWarning,
    )


def fastapi_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app (`kwargs` as for `FastAPI`) with offline ``/docs`` and ``/redoc``,
    readable operation ids, and a spec without 422s whose bearer token is optional."""
    _ignore_body_alias_warning()
    app = FastAPIOffline(generate_unique_id_function=operation_id, **kwargs)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = optional_bearer(without_validation_422(build()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
