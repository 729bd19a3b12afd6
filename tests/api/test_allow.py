"""A 405's ``Allow`` lists the methods of the most specific route template matching the path."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from starlette.exceptions import HTTPException

from sax.allow import allowed_methods, error_headers

router = APIRouter()
for method, path in [
    ("GET", "/v1/models"),
    ("POST", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("PATCH", "/v1/models/{name}"),
    ("DELETE", "/v1/models/{name}"),
    ("POST", "/v1/models/{name}:wait"),
]:
    router.add_api_route(path, lambda: None, methods=[method])


def scope(path: str) -> dict[str, object]:
    return {"type": "http", "method": "OPTIONS", "path": path, "root_path": ""}


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/models", "GET, POST"),
        ("/v1/models/m", "DELETE, GET, PATCH"),
        ("/v1/models/m:wait", "POST"),
        ("/v1/nothing", ""),
    ],
)
def test_allowed_methods(path: str, allow: str) -> None:
    assert allowed_methods(router.routes, scope(path)) == allow


def test_error_headers_complete_a_405_and_keep_the_rest() -> None:
    starlette_405 = HTTPException(405, headers={"Allow": "GET", "X-Kept": "1"})
    assert error_headers(starlette_405, router.routes, scope("/v1/models")) == {
        "Allow": "GET, POST",
        "X-Kept": "1",
    }
    not_found = HTTPException(404, headers={"X-Kept": "1"})
    assert error_headers(not_found, router.routes, scope("/v1/models")) == {"X-Kept": "1"}
