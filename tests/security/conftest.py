"""A real cell with auth on, shared by the security tests that need processes.

One admin process and one model server process (test backend, its own token) on loopback:
``admin`` is in the cell's admin ACL (``admins``) and in ``readers``, the ACL of the guarded
model's ``lm.generate``; ``bob`` is in neither; ``server`` joins; ``carol`` is revoked by a test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import sax.client
from sax.auth.principals import add_token
from sax.client.credentials import set_default_token
from sax.naming import CellId
from sax.schemas import CellConfig
from sax.store import CellStore
from tests.cell import CELL, ECHO, RealCell
from tests.helpers import wait_for

GUARDED = "guarded"
KINDS = ("none", "bad", "outside", "inside")
EXPECTED = {"none": 401, "bad": 401, "outside": 403, "inside": 200}


class Secured:
    """The running cell, the model server's data address and every principal's token."""

    def __init__(self, cell: RealCell, data_address: str, tokens: dict[str, str]) -> None:
        self.cell = cell
        self.data_address = data_address
        self.tokens = tokens

    def token(self, kind: str) -> str | None:
        """The credential of a kind in `KINDS`: none, a bad token, bob's, admin's."""
        return {"none": None, "bad": "sax_not-a-real-token", "outside": self.tokens["bob"]}.get(
            kind, self.tokens["admin"]
        )

    def model(self, name: str) -> dict[str, Any] | None:
        """The admin's view of a model, None when it is not published."""
        r = httpx.get(f"http://{self.cell.admin_address}/v1/models/{name}", timeout=10)
        return r.json() if r.status_code == 200 else None


@pytest.fixture(scope="package")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    os.environ.pop("SAX_TOKEN", None)
    set_default_token(None)
    tmp = tmp_path_factory.mktemp("secured")
    root = str(tmp / "root")
    config = CellConfig(fs_root=f"{root}/fs", admin_acl="admins")
    tokens = {}
    for name, groups in (
        ("admin", ["admins", "readers"]),
        ("bob", []),
        ("server", ["admins"]),
        ("carol", ["admins", "readers"]),
    ):
        config, tokens[name] = add_token(config, name, groups)
    CellStore(root, CellId.parse(CELL)).create(config)
    with RealCell(tmp, sax_root=root) as cell:
        _, address = cell.model_server(env={"SAX_TOKEN": tokens["server"]})
        sax.client.publish(
            f"{CELL}/{GUARDED}",
            ECHO,
            "None",
            1,
            acls={"lm.generate": "readers"},
            sax_root=root,
            token=tokens["admin"],
        )
        wait_for(lambda: cell.loaded(GUARDED) == [address], timeout_s=30)
        yield Secured(cell, address, tokens)
