"""The ``Authorization: Bearer <token>`` scheme as both apps declare and read it.

Routes that may check an ACL depend on `BEARER`, so the OpenAPI specs carry the scheme and
Swagger UI's Authorize button, generated clients and the ``openai`` SDK (its ``api_key``) send
the token unchanged. `access_for` builds each request's `Access` from the live `AuthSource`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sax.auth.acl import Access
from sax.auth.source import AuthSource

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A cell token (`saxutil addtoken`); needed where the cell or model ACLs ask.",
)
WWW_AUTHENTICATE = {"www-authenticate": 'Bearer realm="sax"'}


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for none or another scheme."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def access_for(source: AuthSource) -> Callable[..., Awaitable[Access]]:
    """A FastAPI dependency: the request's `Access`; routes using it declare the scheme."""

    async def access(credentials: Credentials) -> Access:
        return Access(await source.current(), credentials.credentials if credentials else None)

    return access
