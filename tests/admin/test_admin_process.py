"""The admin as real processes on loopback: failover to a standby, durability of an
acknowledged publish across SIGKILL, and a deposed (stopped, then resumed) admin that must
refuse mutations. Lease TTL 2 s throughout."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sax.naming import CellId
from sax.schemas import CellConfig
from sax.store import CellStore, StateStore
from tests.helpers import SAX, Proc, free_port, wait_for, wait_http

CELL = "/sax/test"
TTL_S = 2.0
PUBLISH = {
    "model_id": "/sax/test/m",
    "model_path": "sax.models.test.Echo",
    "checkpoint_path": "None",
    "num_replicas": 1,
}


class Admins:
    """Starts admin processes for one cell and kills whatever is left at teardown."""

    def __init__(self, root: str, logs: Path) -> None:
        self.root = root
        self.logs = logs
        self.procs: list[Proc] = []
        CellStore(root, CellId.parse(CELL)).create(CellConfig(fs_root=root))

    def start(self, name: str) -> tuple[Proc, str]:
        port = free_port()
        args = [SAX, "admin-server", "--sax_cell", CELL, "--sax_root", self.root]
        args += ["--port", str(port), "--lease_ttl", str(TTL_S)]
        proc = Proc(args, self.logs / f"{name}.log")
        self.procs.append(proc)
        return proc, f"127.0.0.1:{port}"

    def location(self) -> str:
        loc, _ = CellStore(self.root, CellId.parse(CELL)).read_location()
        assert loc is not None
        return loc.address

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


def _admins(root: str, tmp_path: Path) -> Iterator[Admins]:
    admins = Admins(root, tmp_path)
    try:
        yield admins
    finally:
        admins.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Admins]:
    yield from _admins(str(tmp_path / "root"), tmp_path)


@pytest.fixture
def on_gcs(gcs_root: str, tmp_path: Path) -> Iterator[Admins]:
    yield from _admins(gcs_root, tmp_path)


def _standing_by(proc: Proc) -> bool:
    assert proc.p.poll() is None, proc.output()
    return "Waiting for leader lease" in proc.output()


def _failover(admins: Admins, within_s: float) -> None:
    leader, leader_addr = admins.start("leader")
    wait_http(f"http://{leader_addr}/healthz")
    standby, standby_addr = admins.start("standby")
    wait_for(lambda: _standing_by(standby), 30)
    assert admins.location() == leader_addr
    with pytest.raises(httpx.ConnectError):  # a standby answers nothing at all
        httpx.get(f"http://{standby_addr}/healthz", timeout=2)

    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_http(f"http://{standby_addr}/healthz", timeout_s=within_s + 5)
    took = time.monotonic() - killed
    assert took < within_s, (took, standby.output())
    assert admins.location() == standby_addr
    assert "Serving /sax/test at" in standby.output()


def test_failover_local_is_immediate(local: Admins) -> None:
    """The kernel drops a killed leader's lock: the standby serves well within the TTL."""
    _failover(local, within_s=TTL_S)


def test_failover_on_gcs(on_gcs: Admins) -> None:
    """No OS lock on GCS: the standby takes over once the lease expires."""
    _failover(on_gcs, within_s=TTL_S + 2)


def test_acknowledged_publish_survives_sigkill(local: Admins) -> None:
    admin, addr = local.start("first")
    wait_http(f"http://{addr}/healthz")
    reply = httpx.post(f"http://{addr}/v1/models", json=PUBLISH, timeout=10)
    admin.signal(signal.SIGKILL)  # right after the 2xx: nothing may be "saved later"
    assert reply.status_code == 201, reply.text

    _, addr = local.start("second")
    got = wait_http(f"http://{addr}/v1/models/m", timeout_s=30).json()
    assert got["model_id"] == PUBLISH["model_id"]
    assert got["model_path"] == PUBLISH["model_path"]
    assert got["num_replicas"] == 1
    state, _ = StateStore(local.root, CellId.parse(CELL)).read()
    assert [m.model_id for m in state.models] == [PUBLISH["model_id"]]


def test_deposed_admin_refuses_mutations(local: Admins) -> None:
    old, old_addr = local.start("old")
    wait_http(f"http://{old_addr}/healthz")
    new, new_addr = local.start("new")
    wait_for(lambda: _standing_by(new), 30)

    old.signal(signal.SIGSTOP)  # alive, holding its OS lock, but no longer renewing
    wait_http(f"http://{new_addr}/healthz", timeout_s=TTL_S + 5)
    assert local.location() == new_addr
    old.signal(signal.SIGCONT)

    body = {**PUBLISH, "model_id": "/sax/test/late"}
    try:
        reply = httpx.post(f"http://{old_addr}/v1/models", json=body, timeout=5)
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "UNAVAILABLE"
    except httpx.TransportError:
        pass  # it had already stepped down and closed its port: also a refusal
    assert wait_for(lambda: old.p.poll() is not None, 10)
    assert old.p.returncode == 1, old.output()
    assert "Stepping down from /sax/test" in old.output()

    # Nothing of the refused publish leaked; the new leader still takes mutations.
    assert httpx.get(f"http://{new_addr}/v1/models/late", timeout=5).status_code == 404
    assert httpx.post(f"http://{new_addr}/v1/models", json=PUBLISH, timeout=10).status_code == 201
    state, _ = StateStore(local.root, CellId.parse(CELL)).read()
    assert [m.model_id for m in state.models] == [PUBLISH["model_id"]]
    assert (
        json.loads((Path(local.root) / "sax/test/location.json").read_text())["address"] == new_addr
    )


def test_unconfigured_cell_fails_clearly(tmp_path: Path) -> None:
    args = [SAX, "admin-server", "--sax_cell", "/sax/nocell", "--sax_root", str(tmp_path)]
    proc = Proc([*args, "--port", str(free_port())], tmp_path / "admin.log")
    try:
        proc.p.wait(timeout=30)
        assert proc.p.returncode == 2
        assert "sax admin-config" in proc.output()
    finally:
        proc.stop()
