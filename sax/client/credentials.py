"""The caller's bearer token: an explicit `token` argument, else the process default, else the
``SAX_TOKEN`` environment variable. saxutil's ``--token`` sets the process default.

The token goes out as ``Authorization: Bearer <token>`` on admin mutations and data calls; with
no token, requests go out anonymous (fine on a cell with auth off, or for data methods whose
ACL admits everyone).
"""

from __future__ import annotations

import os

ENV_VAR = "SAX_TOKEN"

_default: str | None = None


def set_default_token(token: str | None) -> None:
    """The token calls without a `token` argument use; None falls back to ``SAX_TOKEN``."""
    global _default
    _default = token


def resolve_token(token: str | None = None) -> str:
    if token:
        return token
    if _default is not None:
        return _default
    return os.environ.get(ENV_VAR, "")


def auth_headers(token: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` plus the Authorization header of `resolve_token(token)` when there is a token."""
    headers = dict(base or {})
    resolved = resolve_token(token)
    if resolved:
        headers["authorization"] = f"Bearer {resolved}"
    return headers
