"""Changing who may call a cell: principals, their tokens and groups in ``config.json``.

Pure edits (`add_token`, `revoke`, `set_groups`, `set_admin_acl`) plus `edit_config`, which
applies one with a compare-and-swap on config.json, so two operators never lose each other's
change. Running servers pick the result up within `sax.auth.source.REFRESH_S`. Whoever may write
config.json under sax_root administers the cell: storage permissions are the root of trust.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sax.auth.acl import ACL_NAME, validate_acl_name
from sax.auth.directory import new_token, token_digest
from sax.errors import Code, SaxError, invalid, not_found
from sax.schemas import CellConfig, Principal
from sax.store import CellStore

MAX_ATTEMPTS = 10


def _check_name(principal: str) -> None:
    if not ACL_NAME.fullmatch(principal) or principal == "acl/all":
        raise invalid(
            f"principal {principal!r} must be 1-128 letters, digits and _.@/+- "
            "(not starting with punctuation)"
        )


def _groups(groups: Iterable[str]) -> list[str]:
    out = sorted({g.strip() for g in groups if g.strip()})
    for g in out:
        validate_acl_name(g, "group")
    return out


def add_token(
    config: CellConfig, principal: str, groups: Iterable[str] | None = None
) -> tuple[CellConfig, str]:
    """A new token for `principal` (created if new; `groups` replace its groups when given).
    Returns the new config and the token, which is not stored anywhere: show it once."""
    _check_name(principal)
    token = new_token()
    current = config.principals.get(principal, Principal())
    updated = Principal(
        token_sha256=[*current.token_sha256, token_digest(token)],
        groups=_groups(groups) if groups is not None else current.groups,
    )
    return _with(config, principal, updated), token


def revoke(config: CellConfig, principal: str) -> CellConfig:
    """Drops every token of `principal`; it stays known (and auth stays on) with its groups."""
    current = config.principals.get(principal)
    if current is None:
        raise not_found(f"no principal {principal!r} in this cell")
    return _with(config, principal, current.model_copy(update={"token_sha256": []}))


def set_groups(config: CellConfig, principal: str, groups: Iterable[str]) -> CellConfig:
    _check_name(principal)
    current = config.principals.get(principal, Principal())
    return _with(config, principal, current.model_copy(update={"groups": _groups(groups)}))


def set_admin_acl(config: CellConfig, acl: str) -> CellConfig:
    validate_acl_name(acl, "admin ACL")
    return config.model_copy(update={"admin_acl": acl})


def _with(config: CellConfig, principal: str, entry: Principal) -> CellConfig:
    return config.model_copy(update={"principals": {**config.principals, principal: entry}})


def edit_config(store: CellStore, edit: Callable[[CellConfig], CellConfig]) -> CellConfig:
    """Applies `edit` to config.json with a compare-and-swap, retrying a lost race."""
    for _ in range(MAX_ATTEMPTS):
        config, generation = store.read_config_versioned()
        updated = edit(config)
        try:
            store.write_config(updated, generation)
        except SaxError as exc:
            if exc.code == Code.FAILED_PRECONDITION:
                continue
            raise
        return updated
    raise SaxError(Code.UNAVAILABLE, "config.json kept changing; try again")
