"""One error type with canonical codes, shared by the admin, the model server and the client.

Every failure that crosses HTTP is a `SaxError`; its JSON body is
``{"error": {"code": "NOT_FOUND", "message": "..."}}`` and its HTTP status comes from `HTTP_STATUS`.
The client rebuilds the same `SaxError` from the body, so code on both sides matches on `Code`.
"""

from __future__ import annotations

import enum
import json
import logging
from typing import Any


class Code(enum.StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


HTTP_STATUS: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.FAILED_PRECONDITION: 412,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 499,
    Code.INTERNAL: 500,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}

_CODE_BY_STATUS = {status: code for code, status in HTTP_STATUS.items()}

# Codes a client retries against the admin (503 also means: re-read location.json).
ADMIN_RETRYABLE = frozenset({Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED})
# Codes a client retries against a model server, on another replica when there is one.
SERVER_RETRYABLE = frozenset({Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.NOT_FOUND})


class SaxError(Exception):
    """An error with a canonical code; `str(err)` is ``"CODE: message"``.

    `param` names the request field at fault (``temperature``, ``extra_inputs.seed``) when one
    is; the body carries it as ``error.param``, OpenAI's routes as their ``param``.
    """

    def __init__(self, code: Code, message: str, param: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.param = param

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}

    @classmethod
    def from_response(cls, status: int, body: Any) -> SaxError:
        """Rebuilds the error a server sent; tolerates bodies that are not ours (proxies, 502s)."""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            try:
                code = Code(err.get("code", ""))
            except ValueError:
                code = _CODE_BY_STATUS.get(status, Code.INTERNAL)
            param = err.get("param")
            return cls(code, str(err.get("message", "")), param if isinstance(param, str) else None)
        code = _CODE_BY_STATUS.get(status, Code.UNAVAILABLE if status >= 502 else Code.INTERNAL)
        return cls(code, f"HTTP {status}: {str(body)[:200]}")

    @classmethod
    def from_reply(cls, status: int, content: bytes) -> SaxError:
        """`from_response` for the raw bytes of an HTTP error reply (JSON or not)."""
        try:
            body: Any = json.loads(content)
        except ValueError:
            body = content.decode(errors="replace")
        return cls.from_response(status, body)


def invalid(message: str, param: str | None = None) -> SaxError:
    """INVALID_ARGUMENT (400); `param` names the request field at fault."""
    return SaxError(Code.INVALID_ARGUMENT, message, param)


def internal(exc: BaseException, what: str, log: logging.Logger) -> SaxError:
    """INTERNAL (500) under a fresh request id: the exception's text goes to `log` with that id,
    never to the caller."""
    import secrets  # only servers fail this way; clients (each saxutil run) skip the import

    request_id = secrets.token_hex(8)
    log.error("%s failed: request id %s", what, request_id, exc_info=exc)
    return SaxError(Code.INTERNAL, f"internal error; request id {request_id}")


def not_found(message: str) -> SaxError:
    return SaxError(Code.NOT_FOUND, message)


def unavailable(message: str) -> SaxError:
    return SaxError(Code.UNAVAILABLE, message)
