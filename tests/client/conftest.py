"""A cell of test doubles: a fake admin (found through a real location.json) and two fake
model-server replicas of ``/sax/test/m``, all real HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sax.client
from tests.client.fakes import FakeAdmin, FakeModelServer, ServerThread, point_cell_at


@dataclass
class FakeCell:
    sax_root: str
    admin: FakeAdmin
    admin_server: ServerThread
    replicas: list[FakeModelServer]
    replica_servers: list[ServerThread]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.replica_servers]


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[FakeCell]:
    admin = FakeAdmin()
    admin_server = ServerThread(admin.app)
    point_cell_at(tmp_path, admin_server.address)
    replicas = [FakeModelServer(), FakeModelServer()]
    servers = [ServerThread(r.app) for r in replicas]
    admin.add_model("m", [s.address for s in servers])
    yield FakeCell(str(tmp_path), admin, admin_server, replicas, servers)
    sax.client.close()
    for server in [*servers, admin_server]:
        server.stop()
