"""Leader lease on every backend (local dir, memory://, gs:// emulator), with short TTLs:
one leader at a time, renewal keeps it, a silent holder is replaced after its TTL, a deposed
holder knows it, and on a local root a killed holder is replaced at once (kernel flock)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from sax.admin.lease import LeaderLease
from sax.naming import CellId
from sax.schemas import CellConfig, Location
from sax.store import CellStore
from tests.helpers import REPO

CELL = CellId("test")


@pytest.fixture(params=["local", "memory", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CellStore:
    if request.param == "local":
        root = str(tmp_path / "root")
    elif request.param == "memory":
        root = f"memory://lease-{uuid.uuid4().hex[:12]}"
    else:
        root = str(request.getfixturevalue("gcs_root"))
    cell = CellStore(root, CELL)
    cell.create(CellConfig(fs_root=root))
    return cell


def _lease(store: CellStore, name: str, ttl_s: float = 1.0) -> LeaderLease:
    return LeaderLease(
        store, f"{name}:1", f"{name}_{uuid.uuid4().hex[:16]}", ttl_s=ttl_s, poll_s=0.05
    )


def _holder(store: CellStore) -> str:
    loc, _ = store.read_location()
    assert loc is not None
    return loc.admin_id


async def test_mutual_exclusion(store: CellStore) -> None:
    leases = [_lease(store, f"c{i}") for i in range(4)]
    most = 0
    done = False
    served: list[str] = []

    async def monitor() -> None:
        nonlocal most
        while not done:
            most = max(most, sum(lease.is_leader() for lease in leases))
            await asyncio.sleep(0.002)

    async def contend(lease: LeaderLease) -> None:
        await lease.acquire()
        served.append(lease.admin_id)
        assert await asyncio.to_thread(_holder, store) == lease.admin_id
        renewing = asyncio.create_task(lease.run())
        await asyncio.sleep(0.2)
        assert lease.is_leader()
        await lease.release()
        await renewing

    watcher = asyncio.create_task(monitor())
    await asyncio.wait_for(asyncio.gather(*(contend(lease) for lease in leases)), 20)
    done = True
    await watcher
    assert most == 1
    assert sorted(served) == sorted(lease.admin_id for lease in leases)


async def test_renewal_keeps_the_lease(store: CellStore) -> None:
    leader, standby = _lease(store, "a", ttl_s=0.6), _lease(store, "b", ttl_s=0.6)
    await leader.acquire()
    renewing = asyncio.create_task(leader.run())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(standby.acquire(), 1.5)  # 2.5 TTLs
    assert leader.is_leader()
    assert _holder(store) == leader.admin_id
    await leader.release()
    await renewing
    await asyncio.wait_for(standby.acquire(), 2)  # released: the standby gets in
    assert _holder(store) == standby.admin_id
    await standby.release()


async def test_takeover_after_holder_stops_renewing(store: CellStore) -> None:
    silent, standby = _lease(store, "a"), _lease(store, "b")
    await silent.acquire()  # and never renews
    started = time.monotonic()
    await asyncio.wait_for(standby.acquire(), 5)
    waited = time.monotonic() - started
    assert 0.5 < waited < 3, waited  # it respected the live lease, then took the expired one
    assert not silent.is_leader()
    assert standby.is_leader()
    assert _holder(store) == standby.admin_id

    # The old holder wakes up and tries to renew: it is told it was deposed.
    await asyncio.wait_for(silent.run(), 3)
    assert "another admin" in silent.lost_reason
    assert not silent.is_leader()
    assert _holder(store) == standby.admin_id
    await silent.release()
    assert _holder(store) == standby.admin_id  # a deposed holder's release changes nothing
    await standby.release()


async def test_deposed_holder_reports_not_leader(store: CellStore) -> None:
    leader = _lease(store, "a")
    await leader.acquire()
    renewing = asyncio.create_task(leader.run())
    _, gen = store.read_location()
    store.write_location(
        Location(address="x:1", admin_id="thief", lease_expires_at=time.time() + 60), gen
    )
    await asyncio.wait_for(renewing, 3)
    assert not leader.is_leader()
    assert _holder(store) == "thief"
    await leader.release()


_HOLDER = """
import asyncio, sys
from sax.admin.lease import LeaderLease
from sax.naming import CellId
from sax.store import CellStore

async def main():
    lease = LeaderLease(CellStore(sys.argv[1], CellId("test")), "dead:1", "dead_1", ttl_s=30)
    await lease.acquire()
    print("leader", flush=True)
    await lease.run()

asyncio.run(main())
"""


async def test_local_takeover_is_immediate_when_holder_dies(tmp_path: Path) -> None:
    """A SIGKILLed holder's lease has 30 s left, but its kernel lock is gone: take over now."""
    root = str(tmp_path / "root")
    store = CellStore(root, CELL)
    store.create(CellConfig(fs_root=root))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, root, stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"leader"
        standby = _lease(store, "b", ttl_s=30)
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the holder is alive: its lease stands
        proc.send_signal(signal.SIGKILL)
        started = time.monotonic()
        await asyncio.wait_for(waiting, 3)
        assert time.monotonic() - started < 2
        assert standby.is_leader() and _holder(store) == standby.admin_id
        await standby.release()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
