"""The admin's write-through persister: a storage retry of a write that already landed is not a
lost race, while a real race (another admin wrote state.json) deposes this admin."""

from __future__ import annotations

import uuid

import pytest

from sax.admin.lease import LeaderLease
from sax.admin.main import StatePersister
from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import CellConfig, CellState, PublishedModel
from sax.store import CellStore, StateStore

CELL = CellId("test")


def _state(*names: str) -> CellState:
    return CellState(
        models=[
            PublishedModel(
                model_id=f"/sax/test/{n}",
                model_path="sax.models.test.Echo",
                checkpoint_path="None",
                num_replicas=1,
            )
            for n in names
        ]
    )


@pytest.fixture
async def setup() -> tuple[StateStore, LeaderLease]:
    root = f"memory://persist-{uuid.uuid4().hex[:12]}"
    cell = CellStore(root, CELL)
    cell.create(CellConfig(fs_root=f"{root}/fs"))
    lease = LeaderLease(cell, "a:1", f"a_{uuid.uuid4().hex[:16]}", ttl_s=30)
    await lease.acquire()
    return StateStore(f"{root}/fs", CELL), lease


async def test_a_write_that_already_landed_is_accepted(
    setup: tuple[StateStore, LeaderLease],
) -> None:
    states, lease = setup
    persist = StatePersister(states, None, lease)
    states.write(_state("a"), None)  # the first attempt landed; the client's retry will see 412
    await persist(_state("a"))
    assert lease.is_leader()
    await persist(_state("a", "b"))  # and the chain continues from the landed generation
    assert states.read()[0] == _state("a", "b")


async def test_a_foreign_write_deposes_the_admin(setup: tuple[StateStore, LeaderLease]) -> None:
    states, lease = setup
    persist = StatePersister(states, None, lease)
    states.write(_state("x"), None)  # another admin's state
    with pytest.raises(SaxError) as err:
        await persist(_state("a"))
    assert err.value.code is Code.UNAVAILABLE
    assert not lease.is_leader()
    assert states.read()[0] == _state("x")
