"""Canonical codes, HTTP mapping and the JSON error body."""

from __future__ import annotations

from sax.errors import ADMIN_RETRYABLE, HTTP_STATUS, SERVER_RETRYABLE, Code, SaxError


def test_http_mapping_matches_design() -> None:
    expected = {
        "INVALID_ARGUMENT": 400,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "FAILED_PRECONDITION": 412,
        "RESOURCE_EXHAUSTED": 429,
        "INTERNAL": 500,
        "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    }
    assert {c.value: s for c, s in HTTP_STATUS.items() if c.value in expected} == expected


def test_body_roundtrip() -> None:
    err = SaxError(Code.NOT_FOUND, "model /sax/a/b not found")
    assert err.to_body() == {"error": {"code": "NOT_FOUND", "message": "model /sax/a/b not found"}}
    back = SaxError.from_response(404, err.to_body())
    assert (back.code, back.message, back.http_status) == (Code.NOT_FOUND, err.message, 404)
    assert str(back) == "NOT_FOUND: model /sax/a/b not found"


def test_foreign_bodies_map_by_status() -> None:
    assert SaxError.from_response(502, "Bad Gateway").code is Code.UNAVAILABLE
    assert SaxError.from_response(429, {"detail": "x"}).code is Code.RESOURCE_EXHAUSTED
    assert SaxError.from_response(418, None).code is Code.INTERNAL


def test_retry_sets() -> None:
    assert ADMIN_RETRYABLE == {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED}
    assert Code.NOT_FOUND in SERVER_RETRYABLE and Code.NOT_FOUND not in ADMIN_RETRYABLE
    assert Code.INVALID_ARGUMENT not in SERVER_RETRYABLE
