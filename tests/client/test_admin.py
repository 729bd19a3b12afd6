"""Admin calls: module functions, retries, and following the leader through location.json."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sax import client
from sax.errors import Code, SaxError
from tests.client.fakes import FakeAdmin, FakeCell, ServerThread, point_cell_at


def test_publish_list_update_unpublish(cell: FakeCell) -> None:
    root = cell.sax_root
    info = client.publish(
        "/sax/test/new", "sax.models.test.Echo", "None", 2, {"k": 1}, sax_root=root
    )
    assert (info.model_id, info.num_replicas, info.overrides) == ("/sax/test/new", 2, {"k": 1})
    with pytest.raises(SaxError) as dup:
        client.publish("/sax/test/new", "sax.models.test.Echo", "None", 1, sax_root=root)
    assert dup.value.code == Code.ALREADY_EXISTS
    assert client.list("/sax/test/m", sax_root=root).ready_replicas == 2
    assert [m.model_id for m in client.list_all("/sax/test", sax_root=root)] == [
        "/sax/test/m",
        "/sax/test/new",
    ]
    assert client.update("/sax/test/new", num_replicas=3, sax_root=root).num_replicas == 3
    assert client.stats("/sax/test", sax_root=root).num_servers == 2
    client.unpublish("/sax/test/new", sax_root=root)
    with pytest.raises(SaxError) as gone:
        client.list("/sax/test/new", sax_root=root)
    assert gone.value.code == Code.NOT_FOUND


def test_wait_for_ready_returns_when_enough_replicas_load(cell: FakeCell) -> None:
    cell.admin.add_model("w", [])
    timer = threading.Timer(0.3, cell.admin.add_replica, ("w", cell.addresses[0]))
    timer.start()
    start = time.monotonic()
    assert client.wait_for_ready("/sax/test/w", 1, timeout=10, sax_root=cell.sax_root) == 1
    assert 0.25 <= time.monotonic() - start < 5
    with pytest.raises(SaxError) as info:
        client.wait_for_ready("/sax/test/w", 2, timeout=0.5, sax_root=cell.sax_root)
    assert info.value.code == Code.DEADLINE_EXCEEDED


def test_admin_503_is_retried_until_the_deadline(cell: FakeCell) -> None:
    cell.admin.unavailable = True
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        client.list("/sax/test/m", sax_root=cell.sax_root, timeout=0.5)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert "not the leader" in info.value.message
    assert time.monotonic() - start >= 0.45
    assert len(cell.admin.requests) > 2  # it retried


@pytest.mark.parametrize("how", ["stopped", "deposed"])
def test_client_follows_the_admin_to_its_new_address(cell: FakeCell, how: str) -> None:
    root = cell.sax_root
    assert client.list("/sax/test/m", sax_root=root).model_id == "/sax/test/m"
    m = client.Model("/sax/test/m", sax_root=root, timeout=10)
    assert m.lm.generate("before") == [("before", 0.0)]

    successor = FakeAdmin()
    successor.add_model("m", cell.addresses[:1])
    new_server = ServerThread(successor.app)
    try:
        if how == "stopped":
            cell.admin_server.stop()
        else:
            cell.admin.unavailable = True
        point_cell_at(Path(root), new_server.address)
        assert (
            client.list("/sax/test/m", sax_root=root, timeout=10).replicas[0].address
            == (cell.addresses[0])
        )
        # The data path kept working, and the watcher moved to the new admin's (smaller) set.
        assert m.lm.generate("after") == [("after", 0.0)]
        deadline = time.monotonic() + 10
        while m.replicas() != (cell.addresses[0],) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.replicas() == (cell.addresses[0],)
    finally:
        new_server.stop()


def test_cell_without_admin_location_or_config(tmp_path: Path) -> None:
    with pytest.raises(SaxError) as info:
        client.list("/sax/nocell/m", sax_root=str(tmp_path), timeout=1)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "/sax/nocell" in info.value.message
