"""The error layer both apps install: every failure becomes one JSON error body.

`SaxError` as raised; FastAPI's `RequestValidationError` as one 400 INVALID_ARGUMENT naming the
field (`sax.request_errors`); Starlette's `HTTPException` (unknown route 404 ``no such route``,
405 with a complete ``Allow``, 413 from `sax.body_limit`) with the code its status maps to and
a message naming the request; anything else as 500 INTERNAL under a request id whose traceback
goes to the log only. 401 carries ``WWW-Authenticate: Bearer``.

The body is ``{"error": {"code", "message"[, "param"]}}`` unless the app passes a `Shape`: the
model server renders its OpenAI routes in OpenAI's ``{"error": {"message", "type", "param",
"code"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from sax.allow import error_headers
from sax.auth.http import WWW_AUTHENTICATE
from sax.errors import HTTP_STATUS, Code, SaxError, internal
from sax.request_errors import validation_error

log = logging.getLogger(__name__)

Shape = Callable[[Request, SaxError], dict[str, Any]]

_CODE_BY_STATUS = {status: code for code, status in HTTP_STATUS.items()}


def sax_shape(_: Request, err: SaxError) -> dict[str, Any]:
    """``{"error": {"code", "message"[, "param"]}}``."""
    return err.to_body()


def http_error(request: Request, exc: HTTPException) -> SaxError:
    """Starlette's `exc` as a `SaxError`: the code its status maps to (other 4xx:
    INVALID_ARGUMENT, 5xx: INTERNAL), the message naming the request."""
    code = _CODE_BY_STATUS.get(exc.status_code)
    if code is None:
        code = Code.INVALID_ARGUMENT if exc.status_code < 500 else Code.INTERNAL
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such route"
    return SaxError(code, f"{request.method} {request.url.path}: {detail}")


def install_error_handlers(app: FastAPI, shape: Shape = sax_shape) -> None:
    """Answers `SaxError`, request validation, `HTTPException` and any other exception of
    `app`'s routes with an error body in `shape`."""

    def respond(request: Request, err: SaxError, status: int | None = None) -> Response:
        response = JSONResponse(shape(request, err), status_code=status or err.http_status)
        if err.code == Code.UNAUTHENTICATED:
            response.headers.update(WWW_AUTHENTICATE)
        return response

    async def on_sax_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SaxError)
        return respond(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(request, validation_error(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = respond(request, http_error(request, exc), exc.status_code)
        response.headers.update(error_headers(exc, app.router.routes, request.scope))
        return response

    async def on_other(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this response; the log ties its traceback to the id.
        return respond(request, internal(exc, f"{request.method} {request.url.path}", log))

    app.add_exception_handler(SaxError, on_sax_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_other)
