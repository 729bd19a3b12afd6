"""The control plane driven directly (no HTTP): durability, validation, joins, liveness, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sax.admin.cell import Cell
from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import (
    CellState,
    JoinRequest,
    JoinResponse,
    MethodStats,
    ModelReport,
    PublishRequest,
    ReplicaStatus,
    UpdateRequest,
)

ECHO = "sax.models.test.Echo"
M = "/sax/test/m"
L, ING, FAIL = ReplicaStatus.LOADED, ReplicaStatus.LOADING, ReplicaStatus.FAILED


class Disk:
    """A persist callback that records every state written, and can be made to fail."""

    def __init__(self) -> None:
        self.writes: list[CellState] = []
        self.fail = False

    async def __call__(self, state: CellState) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("disk full")
        self.writes.append(state)


@asynccontextmanager
async def running(disk: Disk | None = None, **kw: Any) -> AsyncIterator[Cell]:
    kw.setdefault("join_poll_timeout_s", 0.3)
    cell = Cell(CellId("test"), "admin-1", disk or Disk(), **kw)
    await cell.start()
    try:
        yield cell
    finally:
        await cell.stop()


def pub(name: str = "m", n: int = 1, **kw: Any) -> PublishRequest:
    return PublishRequest(model_id=f"/sax/test/{name}", model_path=ECHO, num_replicas=n, **kw)


def rep(cell: Cell, status: ReplicaStatus, mid: str = M, reason: str = "") -> ModelReport:
    model = cell.published.get(mid)
    return ModelReport(
        model_id=mid,
        model_path=ECHO,
        uuid=model.uuid if model else "gone",
        status=status,
        failure_reason=reason,
        method_stats={"lm.generate": MethodStats()},
    )


def jreq(addr: str, *models: ModelReport, admin_id: str = "admin-1", **kw: Any) -> JoinRequest:
    kw.setdefault("servable_model_paths", [ECHO])
    return JoinRequest(
        address=addr, data_address=f"data-{addr}", models=list(models), admin_id=admin_id, **kw
    )


async def quick(cell: Cell, req: JoinRequest) -> JoinResponse:
    """A join that must be answered at once."""
    return await asyncio.wait_for(cell.join(req), 0.25)


def assigned(resp: JoinResponse) -> list[str]:
    return [a.model_id for a in resp.assignment]


async def eventually(pred: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- admin API


async def test_publish_is_durable_before_it_returns() -> None:
    disk = Disk()
    async with running(disk) as cell:
        info = await cell.publish(pub(n=2, acls={"lm.generate": "acl/x"}))
        assert [m.model_id for m in disk.writes[-1].models] == [M]
        stored = disk.writes[-1].models[0]
        assert stored.uuid and stored.num_replicas == 2 and stored.acls == {"lm.generate": "acl/x"}
        assert (info.model_id, info.num_replicas, info.ready_replicas) == (M, 2, 0)
        assert "0 of 2 replicas ready" in info.reason
        await cell.publish(pub("a"))
        assert [m.model_id for m in (await cell.list()).models] == ["/sax/test/a", M]


async def test_a_failed_write_changes_nothing() -> None:
    disk = Disk()
    async with running(disk) as cell:
        await cell.publish(pub())
        disk.fail = True
        with pytest.raises(OSError):
            await cell.publish(pub("other"))
        with pytest.raises(OSError):
            await cell.update("m", UpdateRequest(num_replicas=5))
        with pytest.raises(OSError):
            await cell.unpublish("m")
        assert [m.model_id for m in (await cell.list()).models] == [M]
        assert (await cell.get("m")).num_replicas == 1
        disk.fail = False
        await cell.publish(pub("other"))
        assert len(disk.writes) == 2


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pub().model_copy(update={"model_id": "/sax/other/m"}), "within SAX cell"),
        (pub().model_copy(update={"model_id": "/sax/test/Bad"}), "must match"),
        (pub().model_copy(update={"model_path": "a/b"}), "model_path"),
        (pub().model_copy(update={"checkpoint_path": "/cns $"}), "checkpoint_path"),
        (pub().model_copy(update={"checkpoint_path": ""}), "checkpoint_path"),
        (pub(n=-1), "num_replicas"),
        (pub(acls={"never.method": ""}), "never.method"),
        (pub(acls={"lm.score": "two words"}), "not a valid ACL name"),
        (pub(admin_acl="a,b"), "admin_acl"),
        (pub(overrides={"ram": "lots"}), "overrides['ram']"),
        (pub(overrides={"constraints": 3}), "constraints"),
    ],
)
async def test_invalid_publishes_are_rejected_and_change_nothing(
    request_: PublishRequest, needle: str
) -> None:
    disk = Disk()
    async with running(disk) as cell:
        with pytest.raises(SaxError) as err:
            await cell.publish(request_)
        assert err.value.code == Code.INVALID_ARGUMENT and needle in err.value.message
        assert disk.writes == [] and (await cell.list()).models == []


async def test_conflicts_unknown_models_and_immutable_path() -> None:
    disk = Disk()
    async with running(disk) as cell:
        await cell.publish(pub())
        with pytest.raises(SaxError) as err:
            await cell.publish(pub(n=3))
        assert err.value.code == Code.ALREADY_EXISTS
        for call in (
            cell.get("nope"),
            cell.unpublish("nope"),
            cell.update("nope", UpdateRequest()),
        ):
            with pytest.raises(SaxError) as err:
                await call
            assert err.value.code == Code.NOT_FOUND
        with pytest.raises(SaxError) as err:
            await cell.update("m", UpdateRequest(model_path="sax.models.test.Other"))
        assert err.value.code == Code.INVALID_ARGUMENT and "model_path is immutable" in str(
            err.value
        )
        with pytest.raises(SaxError) as err:
            await cell.update("m", UpdateRequest(num_replicas=-2))
        assert err.value.code == Code.INVALID_ARGUMENT
        assert len(disk.writes) == 1 and (await cell.get("m")).num_replicas == 1


async def test_update_keeps_the_uuid_and_changes_what_was_given() -> None:
    disk = Disk()
    async with running(disk) as cell:
        await cell.publish(pub(overrides={"x": 1}))
        uuid = disk.writes[-1].models[0].uuid
        info = await cell.update("m", UpdateRequest(num_replicas=3, checkpoint_path="/ckpt/1"))
        assert (info.num_replicas, info.checkpoint_path, info.overrides) == (3, "/ckpt/1", {"x": 1})
        assert disk.writes[-1].models[0].uuid == uuid


async def test_a_follower_refuses_mutations() -> None:
    disk = Disk()
    async with running(disk) as cell:
        cell.set_leader_check(lambda: False)
        with pytest.raises(SaxError) as err:
            await cell.publish(pub())
        assert err.value.code == Code.UNAVAILABLE and "not the leader" in err.value.message
        assert disk.writes == []


# ---------------------------------------------------------------- joins and placement


async def test_new_server_gets_its_assignment_at_once_then_joins_are_held() -> None:
    async with running() as cell:
        await cell.publish(pub())
        first = await quick(cell, jreq("s0", admin_id=""))
        assert first.admin_id == "admin-1" and assigned(first) == [M]
        assert first.assignment[0].uuid and first.assignment[0].model_path == ECHO
        started = time.monotonic()
        again = await cell.join(jreq("s0", rep(cell, ING)))
        assert time.monotonic() - started >= 0.25 and assigned(again) == [M]


async def test_a_held_join_returns_as_soon_as_its_assignment_changes() -> None:
    async with running(join_poll_timeout_s=5) as cell:
        await quick(cell, jreq("s0", admin_id=""))
        held = asyncio.create_task(cell.join(jreq("s0")))
        await asyncio.sleep(0.05)
        assert not held.done()
        await cell.publish(pub())
        resp = await asyncio.wait_for(held, 1)  # long before the 5 s poll ends
        assert assigned(resp) == [M]
        # An ACL change is news too: the server must learn it.
        held = asyncio.create_task(cell.join(jreq("s0", rep(cell, L))))
        await asyncio.sleep(0.05)
        await cell.update("m", UpdateRequest(acls={"lm.generate": "acl/team"}))
        resp = await asyncio.wait_for(held, 1)
        assert resp.assignment[0].acls == {"lm.generate": "acl/team"}


async def test_ready_replicas_feed_watch_wait_and_get() -> None:
    async with running() as cell:
        await cell.publish(pub(n=2))
        await quick(cell, jreq("s0", admin_id=""))
        await quick(cell, jreq("s1", admin_id=""))
        waiter = asyncio.create_task(cell.wait("m", 2, timeout_s=5))
        first = await cell.watch("m", "", 0)
        assert first.has_fullset and first.values == []
        watcher = asyncio.create_task(cell.watch("m", "admin-1", first.next_seqno))
        await asyncio.sleep(0.02)
        assert not watcher.done()
        await asyncio.wait_for(cell.join(jreq("s0", rep(cell, L))), 1)
        change = await asyncio.wait_for(watcher, 1)
        assert [(c.op, c.address) for c in change.changelog] == [("add", "data-s0")]
        assert not waiter.done()
        await asyncio.wait_for(cell.join(jreq("s1", rep(cell, L))), 1)
        assert (await asyncio.wait_for(waiter, 1)).ready_replicas == 2
        info = await cell.get("m")
        assert info.ready_replicas == 2 and info.reason == "" and info.methods == ["lm.generate"]
        assert {(r.address, r.server, r.status) for r in info.replicas} == {
            ("data-s0", "s0", L),
            ("data-s1", "s1", L),
        }


async def test_wait_times_out_with_the_reason() -> None:
    async with running() as cell:
        await cell.publish(pub(n=2))
        with pytest.raises(SaxError) as err:
            await cell.wait("m", 1, timeout_s=0.05)
        assert err.value.code == Code.DEADLINE_EXCEEDED
        assert "no live server serves sax.models.test.Echo" in err.value.message


async def test_a_silent_server_dies_after_the_ttl_and_its_replica_moves() -> None:
    async with running(server_ttl_s=0.4, join_poll_timeout_s=0.1) as cell:
        await cell.publish(pub())
        assert assigned(await quick(cell, jreq("s0", admin_id=""))) == [M]
        assert assigned(await quick(cell, jreq("s1", admin_id=""))) == []
        await cell.join(jreq("s0", rep(cell, L)))
        assert (await cell.get("m")).ready_replicas == 1
        watch = await cell.watch("m", "", 0)
        assert watch.has_fullset and watch.values == ["data-s0"]

        async def keep_alive(addr: str) -> None:
            while True:
                await cell.join(jreq(addr))

        s1 = asyncio.create_task(keep_alive("s1"))
        change = await asyncio.wait_for(cell.watch("m", "admin-1", watch.next_seqno), 2)
        assert [(c.op, c.address) for c in change.changelog] == [("del", "data-s0")]
        servers = [s.address for s in (await cell.servers()).servers]
        assert servers == ["s1"]
        info = await cell.get("m")
        assert [r.server for r in info.replicas] == ["s1"]
        s1.cancel()


async def test_a_closed_join_connection_kills_the_server_within_the_grace() -> None:
    async with running(join_poll_timeout_s=10, disconnect_grace_s=0.2) as cell:
        await cell.publish(pub())
        await quick(cell, jreq("s0", admin_id=""))
        closed = asyncio.Event()
        held = asyncio.create_task(cell.join(jreq("s0", rep(cell, L)), closed.wait))
        await asyncio.sleep(0.05)
        assert (await cell.get("m")).ready_replicas == 1
        started = time.monotonic()
        closed.set()
        with pytest.raises(SaxError):
            await held
        await eventually(lambda: "s0" not in cell.fleet, 2)
        assert time.monotonic() - started < 1.0
        assert (await cell.get("m")).ready_replicas == 0


async def test_a_rejoin_within_the_grace_keeps_the_server() -> None:
    async with running(join_poll_timeout_s=10, disconnect_grace_s=0.3) as cell:
        await quick(cell, jreq("s0", admin_id=""))
        closed = asyncio.Event()
        held = asyncio.create_task(cell.join(jreq("s0"), closed.wait))
        await asyncio.sleep(0.02)
        closed.set()
        with pytest.raises(SaxError):
            await held
        again = asyncio.create_task(cell.join(jreq("s0")))
        await asyncio.sleep(0.6)
        assert "s0" in cell.fleet
        again.cancel()


async def test_a_failed_load_moves_to_another_server_then_retries_with_backoff() -> None:
    async with running(failure_backoff_s=0.3) as cell:
        await cell.publish(pub())
        assert assigned(await quick(cell, jreq("s0", admin_id=""))) == [M]
        # s0 reports the failure: the model leaves s0 at once and goes to s1.
        assert assigned(await quick(cell, jreq("s1", admin_id=""))) == []
        resp = await quick(cell, jreq("s0", rep(cell, FAIL, reason="no weights")))
        assert assigned(resp) == []
        info = await cell.get("m")
        assert [r.server for r in info.replicas if r.status is None] == ["s1"]
        assert "load failed on s0: no weights" in info.reason
        assert [r.failure_reason for r in info.replicas if r.status == FAIL] == ["no weights"]


async def test_a_lone_server_is_retried_after_its_backoff() -> None:
    async with running(failure_backoff_s=0.3, join_poll_timeout_s=2) as cell:
        await cell.publish(pub())
        await quick(cell, jreq("s0", admin_id=""))
        failed_at = time.monotonic()
        assert assigned(await quick(cell, jreq("s0", rep(cell, FAIL, reason="oom")))) == []
        assert "in backoff after a failed load; last: oom" in (await cell.get("m")).reason
        # The server dropped the failed model; the retry arrives in the held join.
        resp = await cell.join(jreq("s0"))
        assert assigned(resp) == [M] and 0.25 <= time.monotonic() - failed_at < 1.5


async def test_a_restarted_server_is_sent_its_assignment_again() -> None:
    async with running() as cell:
        await cell.publish(pub())
        await quick(cell, jreq("s0", admin_id=""))
        await cell.join(jreq("s0", rep(cell, L)))
        # Same address, new process: nothing loaded, no admin_id.
        assert assigned(await quick(cell, jreq("s0", admin_id=""))) == [M]


async def test_a_join_that_arrives_after_its_successor_is_refused() -> None:
    """A server gives up a join when a status changes (LOADING -> LOADED) and sends a fresh
    one; if the given-up one reaches the cell last, it must not turn LOADED back into LOADING."""
    async with running(join_poll_timeout_s=5) as cell:
        await cell.publish(pub())
        one = {"incarnation": "a", "admin_id": ""}
        await quick(cell, jreq("s0", seq=1, **one))
        newer = asyncio.create_task(cell.join(jreq("s0", rep(cell, L), seq=3, incarnation="a")))
        assert (await cell.wait("m", 1, timeout_s=2)).ready_replicas == 1
        with pytest.raises(SaxError) as refused:
            await cell.join(jreq("s0", rep(cell, ING), seq=2, incarnation="a"))
        assert refused.value.code == Code.CANCELLED
        assert "join 2 of s0 came after its join 3" in refused.value.message
        with pytest.raises(SaxError):  # the same number again is no newer
            await cell.join(jreq("s0", rep(cell, ING), seq=3, incarnation="a"))
        info = await cell.get("m")
        assert [(r.server, r.status) for r in info.replicas] == [("s0", L)]
        assert info.ready_replicas == 1 and not newer.done()
        # A new process at the same address starts its own numbering, and so does a server
        # that sends none: both are recorded.
        restarted = await quick(cell, jreq("s0", seq=1, incarnation="b", admin_id=""))
        assert assigned(restarted) == [M]
        assert [r.status for r in (await cell.get("m")).replicas] == [None]
        unordered = asyncio.create_task(cell.join(jreq("s0", rep(cell, L))))
        assert (await cell.wait("m", 1, timeout_s=2)).ready_replicas == 1
        assert newer.done()  # the old process's held join ended when the new one joined
        unordered.cancel()


async def test_models_that_are_not_published_are_left_out_to_unload() -> None:
    async with running() as cell:
        await cell.publish(pub())
        stray = ModelReport(model_id="/sax/test/old", model_path=ECHO, status=L, uuid="u")
        resp = await quick(cell, jreq("s0", stray, admin_id="another-admin"))
        assert assigned(resp) == [M]
        # Still reporting it after the reply is news only if what it holds changed.
        assert (await cell.servers()).servers[0].models[0].model_id == "/sax/test/old"


async def test_an_admin_restart_adopts_what_servers_report() -> None:
    disk = Disk()
    async with running(disk) as cell:
        await cell.publish(pub())
    async with running() as restarted:
        restarted.restore(disk.writes[-1])
        loaded = rep(restarted, L)
        resp = await quick(restarted, jreq("s1", admin_id=""))
        assert assigned(resp) == [M]  # nobody reported it yet: first server takes it
        resp = await quick(restarted, jreq("s0", loaded, admin_id="admin-old"))
        # s0 already has it loaded: adopting it scales s1's pending replica back down.
        assert assigned(resp) == [M]
        info = await restarted.get("m")
        assert info.ready_replicas == 1 and [r.server for r in info.replicas] == ["s0"]
        assert (await restarted.wait("m", 1, timeout_s=0.1)).ready_replicas == 1


async def test_unpublish_resets_watchers_cancels_waiters_and_allows_republish() -> None:
    async with running() as cell:
        await cell.publish(pub())
        await quick(cell, jreq("s0", admin_id=""))
        await cell.join(jreq("s0", rep(cell, L)))
        old = rep(cell, L)
        seen = await cell.watch("m", "admin-1", 0)
        watcher = asyncio.create_task(cell.watch("m", "admin-1", seen.next_seqno))
        waiter = asyncio.create_task(cell.wait("m", 2, timeout_s=5))
        held = asyncio.create_task(cell.join(jreq("s0", old)))
        await asyncio.sleep(0.02)
        await cell.unpublish("m")
        reset = await asyncio.wait_for(watcher, 1)
        assert reset.has_fullset and reset.values == [] and reset.next_seqno == 0
        with pytest.raises(SaxError) as err:
            await waiter
        assert err.value.code == Code.CANCELLED
        assert assigned(await asyncio.wait_for(held, 1)) == []
        with pytest.raises(SaxError) as err:
            await cell.watch("m", "admin-1", 0)
        assert err.value.code == Code.NOT_FOUND
        # Republish at once; the old incarnation s0 still holds is not ready.
        await cell.publish(pub())
        resp = await quick(cell, jreq("s0", old))
        assert assigned(resp) == [M] and resp.assignment[0].uuid != old.uuid
        assert (await cell.get("m")).ready_replicas == 0


async def test_scale_down_drops_the_replica_that_is_not_ready() -> None:
    async with running() as cell:
        await cell.publish(pub(n=2))
        await quick(cell, jreq("s0", admin_id=""))
        await quick(cell, jreq("s1", admin_id=""))
        await cell.join(jreq("s0", rep(cell, ING)))
        await cell.join(jreq("s1", rep(cell, L)))
        await cell.update("m", UpdateRequest(num_replicas=1))
        await cell.placed()
        assert [r.server for r in (await cell.get("m")).replicas] == ["s1"]


async def test_stats_and_servers() -> None:
    async with running() as cell:
        await cell.publish(pub())
        await quick(cell, jreq("s0", admin_id="", chip="tpu_v5e", topology="2x2", tags=["b", "a"]))
        await quick(cell, jreq("s1", admin_id="", servable_model_paths=[ECHO, "x.Y"]))
        stats = await cell.stats()
        assert (stats.num_servers, stats.num_models) == (2, 1)
        assert stats.servers_by_model_path == {ECHO: 2, "x.Y": 1}
        assert {(t.chip, t.topology, t.num_servers) for t in stats.server_types} == {
            ("cpu", "1", 1),
            ("tpu_v5e", "2x2", 1),
        }
        assert (await cell.stats("m")).num_servers == 1
        servers = (await cell.servers()).servers
        assert [(s.address, s.data_address, s.tags) for s in servers] == [
            ("s0", "data-s0", ["a", "b"]),
            ("s1", "data-s1", []),
        ]


async def test_an_update_that_reloads_is_not_reported_ready() -> None:
    async with running(join_poll_timeout_s=0.1) as cell:
        await cell.publish(pub(overrides={"x": 1}))
        assert assigned(await quick(cell, jreq("s0", admin_id=""))) == [M]
        await cell.join(jreq("s0", rep(cell, L)))
        assert (await cell.get("m")).ready_replicas == 1
        # More replicas reload nothing: the loaded one is still ready.
        more = await cell.update("m", UpdateRequest(num_replicas=2))
        assert more.ready_replicas == 1
        for change in (UpdateRequest(overrides={"x": 2}), UpdateRequest(checkpoint_path="/c/2")):
            info = await cell.update("m", change)
            assert info.ready_replicas == 0 and "reloading" in info.reason
            assert [r.status for r in info.replicas] == [ING]
