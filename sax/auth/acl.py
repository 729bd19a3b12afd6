"""Saxml's ACL semantics, enforced: pure decisions over a caller and a config snapshot.

Where ACLs apply (reference: saxml-admin.md section 8):

| action | ACL |
|---|---|
| publish, join | the cell's ``admin_acl`` |
| update, unpublish | the cell's ``admin_acl`` or the model's ``admin_acl`` |
| a data method (``lm.generate``, ...) | the model's ``acls[method]`` on the model server |
| ``lm.generate_stream`` with no ACL of its own | ``acls["lm.generate"]`` |
| list, get, locations, wait, stats, servers | none |

An ACL names a principal or a group. ``""`` and ``acl/all`` admit everyone. With auth on, the
admin actions always need an authenticated caller (an empty cell ``admin_acl`` then admits any
principal of the cell), while a data method whose ACL admits everyone needs no token at all.
Deliberate fixes of the original: a model with no admin ACL is changed by cell admins only (Saxml
let anyone change it), and streaming is not left open by an ACL set on ``lm.generate`` only.
With auth off (no principals in the config) nothing is checked.

Failures: no token, or a token no principal holds, is UNAUTHENTICATED (401); a principal the ACL
does not admit is PERMISSION_DENIED (403), naming the action and the ACL.
"""

from __future__ import annotations

import re

from sax.auth.directory import ANONYMOUS, Caller, Directory
from sax.errors import Code, SaxError, invalid

EVERYONE = frozenset({"", "acl/all"})
ACL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@/+-]{0,127}")


def validate_acl_name(name: str, what: str) -> None:
    """INVALID_ARGUMENT naming `what` unless `name` is empty or a principal/group name:
    1-128 characters of letters, digits and ``_.@/+-``, not starting with punctuation."""
    if name and not ACL_NAME.fullmatch(name):
        raise invalid(
            f"{what} {name!r} is not a valid ACL name: a principal or group name of 1-128 "
            "letters, digits and _.@/+- (empty admits everyone)"
        )


def admits(acl: str, caller: Caller) -> bool:
    return acl in EVERYONE or caller.member_of(acl)


def unauthenticated(what: str) -> SaxError:
    return SaxError(Code.UNAUTHENTICATED, f"{what} needs credentials: send Authorization: Bearer")


class Access:
    """What one request may do: its bearer token (None: none sent) against a config snapshot
    (`directory` None: auth is off). The caller is resolved on first use, so a request that no
    ACL restricts never pays for it and a bad token is only an error where identity matters."""

    __slots__ = ("_caller", "directory", "token")

    def __init__(self, directory: Directory | None, token: str | None) -> None:
        self.directory = directory
        self.token = token or None
        self._caller: Caller | None = None

    @property
    def enforced(self) -> bool:
        return self.directory is not None

    def caller(self, what: str) -> Caller:
        """The authenticated caller; ANONYMOUS without a token; 401 for an unknown token."""
        if self._caller is None:
            if self.directory is None or self.token is None:
                self._caller = ANONYMOUS
            else:
                found = self.directory.identify(self.token)
                if found is None:
                    raise SaxError(
                        Code.UNAUTHENTICATED,
                        f"{what}: the bearer token is not valid in this cell (revoked or mistyped)",
                    )
                self._caller = found
        return self._caller

    @property
    def principal(self) -> str | None:
        """The caller's principal once known (None with auth off or before a check)."""
        return self._caller.principal if self._caller is not None else None

    def authenticate(self, what: str) -> None:
        """401 unless the caller is a principal of the cell (a no-op with auth off)."""
        if self.directory is not None:
            self._authenticated(what)

    def require_cell_admin(self, action: str, cell: str) -> None:
        """Publish and join: the cell's admin ACL (any principal when it is empty)."""
        if self.directory is None:
            return
        what = f"{action} in {cell}"
        caller = self._authenticated(what)
        acl = self.directory.admin_acl
        if not admits(acl, caller):
            raise _denied(caller, what, f"the cell's admin ACL {acl!r}")

    def require_model_admin(self, action: str, model_id: str, model_acl: str) -> None:
        """Update and unpublish: the cell's admin ACL or the model's own admin ACL."""
        if self.directory is None:
            return
        what = f"{action} {model_id}"
        caller = self._authenticated(what)
        cell_acl = self.directory.admin_acl
        if admits(cell_acl, caller) or (model_acl and admits(model_acl, caller)):
            return
        acls = f"the cell's admin ACL {cell_acl!r}"
        if model_acl:
            acls += f" or the model's admin ACL {model_acl!r}"
        raise _denied(caller, what, acls)

    def require_data(self, model_id: str, method: str, acl: str) -> None:
        """A data method: the model's ACL for `method` (everyone when it is empty)."""
        if self.directory is None or acl in EVERYONE:
            return
        what = f"call {method} on {model_id}"
        caller = self._authenticated(what)
        if not caller.member_of(acl):
            raise _denied(caller, what, f"ACL {acl!r}")

    def _authenticated(self, what: str) -> Caller:
        caller = self.caller(what)
        if caller.principal is None:
            raise unauthenticated(what)
        return caller


OPEN = Access(None, None)


def _denied(caller: Caller, what: str, acls: str) -> SaxError:
    return SaxError(Code.PERMISSION_DENIED, f"{caller.name} may not {what}: not in {acls}")
