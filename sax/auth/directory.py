"""Tokens -> principals -> groups: one immutable snapshot of a cell's ``config.json``.

A token is a high-entropy random string (`new_token`); the config keeps only its SHA-256 hex
digest (`token_digest`), so reading ``config.json`` does not reveal a usable credential. A caller
is a member of an ACL when the ACL names its principal or one of its groups.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from sax.schemas import CellConfig

TOKEN_PREFIX = "sax_"


def new_token() -> str:
    """A fresh bearer token: ``sax_`` + 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which `token` is stored in ``config.json``."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and the groups it belongs to; `principal` None = anonymous."""

    principal: str | None = None
    groups: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.principal if self.principal is not None else "an anonymous caller"

    def member_of(self, acl: str) -> bool:
        return self.principal is not None and (acl == self.principal or acl in self.groups)


ANONYMOUS = Caller()


@dataclass(frozen=True)
class Directory:
    """The auth part of a cell's config; `None` stands for a cell with auth off (no principals)."""

    admin_acl: str = ""
    principals: Mapping[str, frozenset[str]] = field(default_factory=dict)  # name -> groups
    by_digest: Mapping[str, str] = field(default_factory=dict)  # token digest -> name

    @classmethod
    def from_config(cls, config: CellConfig) -> Directory | None:
        if not config.principals:
            return None
        by_digest = {
            digest: name for name, p in config.principals.items() for digest in p.token_sha256
        }
        return cls(
            admin_acl=config.admin_acl,
            principals={name: frozenset(p.groups) for name, p in config.principals.items()},
            by_digest=by_digest,
        )

    def identify(self, token: str) -> Caller | None:
        """The caller `token` belongs to, or None when no principal holds it."""
        # A dict lookup on the digest leaks nothing useful: timing reveals digests, not tokens.
        name = self.by_digest.get(token_digest(token))
        return None if name is None else Caller(name, self.principals.get(name, frozenset()))
