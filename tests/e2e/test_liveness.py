"""Liveness with real processes (DESIGN section 5): the admin learns that a model server is gone
from its join stream alone, re-places the replica on a spare server, and WatchLoc watchers are
told. A crash is seen through the held join's closed connection (well under the TTL); a silent
(SIGSTOPped) server through the server TTL, here 2 s. A fast restart on the same address gets its
assignment back, and a replica that fails to load says why in ``saxutil ls`` and on ``GET /``."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sax import client
from sax.schemas import ServerStatus
from tests.cell import CELL, ECHO, LocationLog, RealCell
from tests.helpers import Proc, wait_for

TTL_S = 2.0
JOIN_POLL_S = 5.0  # the admin's default hold of a join that brings no news
ECHO_ID = f"{CELL}/echo"


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[RealCell]:
    with RealCell(tmp_path, admin_flags=[f"--server_ttl={TTL_S}"]) as c:
        yield c


@pytest.fixture
def location_log(cell: RealCell) -> Iterator[LocationLog]:
    """Publishes echo (1 replica) and watches its locations."""
    client.publish(ECHO_ID, ECHO, "None", 1, sax_root=cell.sax_root)
    log = LocationLog(cell.sax_root, ECHO_ID)
    yield log
    log.stop()


def _placed(
    cell: RealCell, servers: list[tuple[Proc, str]], log: LocationLog
) -> tuple[Proc, str, str]:
    """Once echo is LOADED on one of two servers and the watcher knows it: (its process, its
    address, the spare's address)."""
    (address,) = wait_for(lambda: cell.loaded("echo"), timeout_s=15)
    log.wait(lambda seen: seen == (address,))
    proc = next(p for p, a in servers if a == address)
    (spare,) = [a for _, a in servers if a != address]
    return proc, address, spare


def _generate(cell: RealCell) -> list[tuple[str, float]]:
    return client.Model(ECHO_ID, sax_root=cell.sax_root).lm.generate("ping", timeout=10)


def test_sigkilled_server_is_replaced_within_seconds(
    cell: RealCell, location_log: LocationLog
) -> None:
    servers = cell.model_servers(2)
    victim, victim_address, spare = _placed(cell, servers, location_log)

    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    seen = location_log.wait(lambda s: s == (spare,), since=killed, timeout_s=15)

    assert seen - killed < 3.0, location_log.history
    assert f"server {victim_address} is dead (disconnected)" in cell.admin.output()
    # The watcher saw the dead address go and the spare's come, never both at once.
    assert all(victim_address not in s for s in location_log.sets_since(killed))
    assert cell.loaded("echo") == [spare]
    assert _generate(cell) == [("ping", 0.0)]


def test_silent_server_is_dropped_after_the_ttl(cell: RealCell, location_log: LocationLog) -> None:
    servers = cell.model_servers(2)
    victim, victim_address, spare = _placed(cell, servers, location_log)

    victim.signal(signal.SIGSTOP)  # its connections stay open: only the TTL can tell
    try:
        stopped = time.monotonic()
        # Its last join arrived at most one poll before the stop; it is dead TTL after that,
        # and never while the admin still holds that join.
        seen = location_log.wait(
            lambda s: s == (spare,), since=stopped, timeout_s=JOIN_POLL_S + TTL_S + 8
        )
        assert seen - stopped < JOIN_POLL_S + TTL_S + 2, location_log.history
        assert f"server {victim_address} is dead (silent)" in cell.admin.output()
        assert cell.loaded("echo") == [spare]
        assert victim_address not in {s.address for s in cell.servers().servers}
    finally:
        victim.signal(signal.SIGCONT)


def test_fast_restart_on_the_same_port_reloads_its_assignment(
    tmp_path: Path,
) -> None:
    """The original's quirk: a server that restarted before the admin noticed kept its entry,
    which still said LOADED, so it was never told to load again. Here the admin still counts
    the old incarnation alive (long TTL, and no held join whose close it could see) when the
    new one joins empty-handed: it must be sent the assignment again."""
    with RealCell(tmp_path, admin_flags=["--server_ttl=60"]) as cell:
        client.publish(ECHO_ID, ECHO, "None", 1, sax_root=cell.sax_root)
        old, address = cell.model_server()
        wait_for(lambda: cell.loaded("echo") == [address], timeout_s=15)

        # Stop it, let the admin answer its held join, then kill it: the admin sees no close.
        old.signal(signal.SIGSTOP)
        wait_for(
            lambda: cell.servers().servers[0].seconds_since_last_join > JOIN_POLL_S + 0.3,
            timeout_s=JOIN_POLL_S + 5,
        )
        old.signal(signal.SIGKILL)
        old.p.wait(timeout=10)
        new, _ = cell.model_server(port=int(address.rsplit(":", 1)[1]))
        restarted = time.monotonic()

        def reloaded() -> bool:
            status = ServerStatus.model_validate(
                httpx.get(f"http://{address}/v1/status", timeout=5).json()
            )
            return [(m.model_id, m.status) for m in status.models] == [(ECHO_ID, "LOADED")]

        wait_for(reloaded, timeout_s=15)
        # Sent at once, not in the reply to a held join a poll timeout later.
        assert time.monotonic() - restarted < JOIN_POLL_S - 2, new.output()
        assert "is dead" not in cell.admin.output()  # the fast path: never declared dead
        assert f"Loaded {ECHO_ID}" in new.output()
        wait_for(lambda: cell.loaded("echo") == [address], timeout_s=10)
        assert _generate(cell) == [("ping", 0.0)]


def test_failed_load_shows_its_reason(cell: RealCell) -> None:
    _, address = cell.model_server()
    run = cell.saxutil("publish", f"{CELL}/broken", "sax.models.test.FailToLoad", "None", "1")
    assert run.returncode == 0, run.stderr
    reason = "RuntimeError: FailToLoad always fails to load (test servable)"

    def failed() -> dict[str, object] | None:
        run = cell.saxutil("ls", f"{CELL}/broken", "--json")
        assert run.returncode == 0, run.stderr
        info = json.loads(run.stdout)
        replicas = info["replicas"]
        return info if replicas and replicas[0]["status"] == "FAILED" else None

    info = wait_for(failed, timeout_s=15, interval_s=0.2)
    assert info["replicas"] == [
        {"address": address, "server": address, "status": "FAILED", "failure_reason": reason}
    ]
    assert info["ready_replicas"] == 0
    assert f"load failed on {address}: {reason}" in str(info["reason"])

    def page() -> str:
        reply = httpx.get(f"http://{cell.admin_address}/", timeout=5)
        assert reply.status_code == 200
        return reply.text if reason in reply.text else ""

    assert f"{CELL}/broken" in wait_for(page, timeout_s=10, interval_s=0.2)
