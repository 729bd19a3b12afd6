"""Identity and ACL decisions as pure functions: tokens, principals, Saxml's ACL rules, start-up."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from sax.auth.acl import Access, validate_acl_name
from sax.auth.directory import Directory, token_digest
from sax.auth.principals import add_token, edit_config, revoke, set_groups
from sax.auth.startup import is_loopback, start_policy
from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import CellConfig
from sax.store import CellStore

CELL = "/sax/test"


def config_with(**groups: list[str]) -> tuple[CellConfig, dict[str, str]]:
    config = CellConfig(fs_root="memory://fs", admin_acl="admins")
    tokens = {}
    for name, member_of in groups.items():
        config, tokens[name] = add_token(config, name, member_of)
    return config, tokens


def directory(config: CellConfig) -> Directory:
    found = Directory.from_config(config)
    assert found is not None
    return found


def code(call: Callable[..., object], *args: object) -> tuple[Code | None, str]:
    """(code, message) of the SaxError `call(*args)` raises; (None, "") when it passes."""
    try:
        call(*args)
    except SaxError as exc:
        return exc.code, exc.message
    return None, ""


def test_acl_names_are_principals_or_groups() -> None:
    for good in ("", "readers", "acl/all", "acl/sax-dev", "alice@example.com", "a" * 128):
        validate_acl_name(good, "acl")
    for bad in ("two words", "a,b", "-x", "a" * 129, "tab\there"):
        with pytest.raises(SaxError) as err:
            validate_acl_name(bad, "acls['lm.generate']")
        assert (
            err.value.code == Code.INVALID_ARGUMENT and "acls['lm.generate']" in err.value.message
        )


def test_tokens_are_stored_as_digests_only() -> None:
    config, tokens = config_with(alice=["admins"])
    stored = config.model_dump_json()
    assert tokens["alice"].startswith("sax_") and len(tokens["alice"]) > 40
    assert tokens["alice"] not in stored and token_digest(tokens["alice"]) in stored
    found = directory(config).identify(tokens["alice"])
    assert found is not None and found.principal == "alice" and found.groups == {"admins"}
    assert directory(config).identify("sax_not-a-token") is None


def test_auth_is_off_without_principals_and_everything_is_allowed() -> None:
    assert Directory.from_config(CellConfig(fs_root="x", admin_acl="admins")) is None
    open_access = Access(None, "whatever")
    open_access.require_cell_admin("publish", CELL)
    open_access.require_model_admin("unpublish", f"{CELL}/m", "owners")
    open_access.require_data(f"{CELL}/m", "lm.generate", "readers")


def test_cell_admin_acl_guards_publish_and_join() -> None:
    config, t = config_with(alice=["admins"], bob=[])
    d = directory(config)
    for action in ("publish", "join"):
        assert code(Access(d, None).require_cell_admin, action, CELL)[0] == Code.UNAUTHENTICATED
        assert code(Access(d, "sax_bad").require_cell_admin, action, CELL)[0] == (
            Code.UNAUTHENTICATED
        )
        denied = code(Access(d, t["bob"]).require_cell_admin, action, CELL)
        assert denied[0] == Code.PERMISSION_DENIED
        assert action in denied[1] and "'admins'" in denied[1] and "bob" in denied[1]
        assert code(Access(d, t["alice"]).require_cell_admin, action, CELL)[0] is None
    # An empty cell admin ACL admits any principal, never an anonymous caller.
    d_any = directory(config.model_copy(update={"admin_acl": ""}))
    assert code(Access(d_any, t["bob"]).require_cell_admin, "publish", CELL)[0] is None
    assert code(Access(d_any, None).require_cell_admin, "publish", CELL)[0] == (
        Code.UNAUTHENTICATED
    )


def test_model_admin_acl_extends_the_cell_admins() -> None:
    config, t = config_with(alice=["admins"], bob=["owners"], eve=[])
    d = directory(config)
    m = f"{CELL}/m"
    assert code(Access(d, t["alice"]).require_model_admin, "update", m, "")[0] is None
    assert code(Access(d, t["bob"]).require_model_admin, "update", m, "owners")[0] is None
    assert code(Access(d, t["bob"]).require_model_admin, "update", m, "bob")[0] is None
    # Saxml let anyone change a model without an admin ACL; here only cell admins may.
    denied = code(Access(d, t["bob"]).require_model_admin, "unpublish", m, "")
    assert denied[0] == Code.PERMISSION_DENIED and "unpublish" in denied[1]
    denied = code(Access(d, t["eve"]).require_model_admin, "update", m, "owners")
    assert "'owners'" in denied[1] and "'admins'" in denied[1]


def test_data_acls_name_the_method_and_the_acl() -> None:
    config, t = config_with(alice=["readers"], bob=[])
    d = directory(config)
    m = f"{CELL}/m"
    for everyone in ("", "acl/all"):  # no identity needed: even a bad token passes
        assert code(Access(d, "sax_bad").require_data, m, "lm.generate", everyone)[0] is None
    assert code(Access(d, None).require_data, m, "lm.generate", "readers")[0] == (
        Code.UNAUTHENTICATED
    )
    denied = code(Access(d, t["bob"]).require_data, m, "lm.generate", "readers")
    assert denied[0] == Code.PERMISSION_DENIED
    assert "lm.generate" in denied[1] and "'readers'" in denied[1]
    assert code(Access(d, t["alice"]).require_data, m, "lm.generate", "readers")[0] is None
    assert code(Access(d, t["bob"]).require_data, m, "lm.generate", "bob")[0] is None


def test_principal_edits_and_revocation_keep_auth_on() -> None:
    config, t = config_with(alice=["admins"])
    config, second = add_token(config, "alice")
    assert directory(config).identify(second) is not None
    assert config.principals["alice"].groups == ["admins"]  # kept when not given
    config = revoke(config, "alice")
    d = Directory.from_config(config)
    assert d is not None  # still on: revoking the last token must not open the cell
    assert d.identify(t["alice"]) is None and d.identify(second) is None
    config = set_groups(config, "alice", ["readers", "admins", ""])
    assert config.principals["alice"].groups == ["admins", "readers"]
    for bad in ("two words", "acl/all"):
        with pytest.raises(SaxError):
            add_token(config, bad)
    with pytest.raises(SaxError) as err:
        revoke(config, "nobody")
    assert err.value.code == Code.NOT_FOUND


def test_config_edits_are_compare_and_swap_and_admin_config_keeps_principals() -> None:
    root = f"memory://auth-{uuid.uuid4().hex[:12]}"
    store = CellStore(root, CellId.parse(CELL))
    store.create(CellConfig(fs_root=f"{root}/fs"))
    edit_config(store, lambda c: add_token(c, "alice", ["admins"])[0])
    _, generation = store.read_config_versioned()
    edit_config(store, lambda c: set_groups(c, "alice", ["readers"]))
    with pytest.raises(SaxError) as err:  # a writer holding the old generation loses
        store.write_config(CellConfig(fs_root="elsewhere"), generation)
    assert err.value.code == Code.FAILED_PRECONDITION
    store.create(CellConfig(fs_root=f"{root}/fs2", admin_acl="admins"), exist_ok=True)
    config = store.read_config()
    assert config.fs_root.endswith("fs2") and config.principals["alice"].groups == ["readers"]


def test_start_policy_secure_by_default_easy_on_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert "auth is off" in start_policy("admin", "127.0.0.1", None, insecure=False)
    with pytest.raises(SaxError) as err:
        start_policy("admin server", "0.0.0.0", None, insecure=False)
    assert err.value.code == Code.FAILED_PRECONDITION and "--insecure" in err.value.message
    assert "OFF" in start_policy("admin server", "0.0.0.0", None, insecure=True)
    config, t = config_with(server=["admins"])
    d = directory(config)
    assert "auth is on" in start_policy("admin server", "0.0.0.0", d, insecure=False)
    for token, needle in (("", "needs its own token"), ("sax_unknown", "not valid")):
        with pytest.raises(SaxError) as err:
            start_policy("model server", "127.0.0.1", d, insecure=False, token=token)
        assert needle in err.value.message
    line = start_policy("model server", "0.0.0.0", d, insecure=False, token=t["server"])
    assert "joining as server" in line
