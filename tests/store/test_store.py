"""One suite for every storage backend: a local directory, memory:// and gs:// (a real GCS
emulator). The properties the admin relies on: config round-trips, compare-and-swap on
location.json and state.json refuses a stale writer and changes nothing, cells are listed."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import CellConfig, CellState, Location, PublishedModel
from sax.store import CellStore, StateStore, list_cells

CELL = CellId("test")


@pytest.fixture(params=["local", "memory", "gcs"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "memory":
        return f"memory://sax-{uuid.uuid4().hex[:12]}"
    return str(request.getfixturevalue("gcs_root"))


def _model(name: str) -> PublishedModel:
    return PublishedModel(
        model_id=f"/sax/test/{name}",
        model_path="sax.models.test.Echo",
        checkpoint_path="None",
        num_replicas=1,
        uuid=uuid.uuid4().hex,
    )


def test_config_create_and_read(root: str) -> None:
    store = CellStore(root, CELL)
    assert not store.exists()
    with pytest.raises(SaxError) as err:
        store.read_config()
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "sax admin-config" in err.value.message

    store.create(CellConfig(fs_root=root, admin_acl="acl/x"))
    assert store.exists()
    assert store.read_config() == CellConfig(fs_root=root, admin_acl="acl/x")
    loc, gen = store.read_location()
    assert loc == Location() and loc.address == ""
    assert gen is not None


def test_create_existing_cell_refused(root: str) -> None:
    store = CellStore(root, CELL)
    store.create(CellConfig(fs_root=root))
    with pytest.raises(SaxError) as err:
        store.create(CellConfig(fs_root="elsewhere"))
    assert err.value.code == Code.ALREADY_EXISTS
    assert store.read_config().fs_root == root

    # exist_ok rewrites config.json but keeps the leader's location.json.
    loc_gen = store.write_location(Location(address="h:1"), store.read_location()[1])
    store.create(CellConfig(fs_root=root, admin_acl="acl/y"), exist_ok=True)
    assert store.read_config().admin_acl == "acl/y"
    assert store.read_location() == (Location(address="h:1"), loc_gen)


def test_location_compare_and_swap(root: str) -> None:
    store = CellStore(root, CELL)
    assert store.read_location() == (None, None)
    g1 = store.write_location(Location(address="a:1", admin_id="a"), None)
    with pytest.raises(SaxError) as err:  # "must not exist" on an existing object
        store.write_location(Location(address="b:1", admin_id="b"), None)
    assert err.value.code == Code.FAILED_PRECONDITION

    g2 = store.write_location(Location(address="a:1", admin_id="a", lease_expires_at=5.0), g1)
    assert g2 != g1
    with pytest.raises(SaxError) as err:  # stale generation
        store.write_location(Location(address="b:1", admin_id="b"), g1)
    assert err.value.code == Code.FAILED_PRECONDITION
    loc, gen = store.read_location()
    assert (loc, gen) == (Location(address="a:1", admin_id="a", lease_expires_at=5.0), g2)

    # Identical content still gets a new generation, so an old reader cannot sneak in.
    g3 = store.write_location(Location(address="a:1", admin_id="a", lease_expires_at=5.0), g2)
    assert g3 != g2
    with pytest.raises(SaxError):
        store.write_location(Location(address="c:1"), g2)


def test_state_roundtrip_and_stale_write(root: str) -> None:
    states = StateStore(root, CELL)
    assert states.read() == (CellState(), None)
    one = CellState(models=[_model("a")])
    g1 = states.write(one, None)
    assert states.read() == (one, g1)

    two = CellState(models=[_model("a"), _model("b")])
    g2 = states.write(two, g1)
    with pytest.raises(SaxError) as err:
        states.write(CellState(), g1)  # a deposed admin's write
    assert err.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(SaxError):
        states.write(CellState(), None)
    assert states.read() == (two, g2)


def test_local_files_are_versioned_json(tmp_path: Path) -> None:
    """The on-disk layout other tools (and people) read: plain JSON with a version field."""
    root = f"file://{tmp_path}"
    CellStore(root, CELL).create(CellConfig(fs_root=root))
    StateStore(root, CELL).write(CellState(models=[_model("m")]), None)
    cell_dir = tmp_path / "sax" / "test"
    for name in ("config.json", "location.json", "state.json"):
        assert json.loads((cell_dir / name).read_text())["version"] == 1
    assert not [p for p in cell_dir.iterdir() if p.name.startswith(".") and "tmp" in p.name]


def test_list_cells(root: str) -> None:
    assert list_cells(root) == []
    for name in ("zeta", "alpha", "mid"):
        CellStore(root, CellId(name)).create(CellConfig(fs_root=root))
    StateStore(root, CellId("stateonly")).write(CellState(), None)  # no config: not a cell
    assert list_cells(root) == ["alpha", "mid", "zeta"]


def test_concurrent_writers_one_winner(root: str) -> None:
    """Many writers race from the same generation: exactly one wins, the rest are refused."""
    store = CellStore(root, CELL)
    gen = store.write_location(Location(), None)
    wins: list[str] = []
    losses: list[Code] = []
    lock = threading.Lock()

    def contend(i: int) -> None:
        try:
            store.write_location(Location(admin_id=f"w{i}"), gen)
            with lock:
                wins.append(f"w{i}")
        except SaxError as exc:
            with lock:
                losses.append(exc.code)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and losses == [Code.FAILED_PRECONDITION] * 7
    loc, _ = store.read_location()
    assert loc is not None and loc.admin_id == wins[0]


def test_unsupported_root_is_refused() -> None:
    with pytest.raises(SaxError) as err:
        CellStore("s3://bucket/x", CELL)
    assert err.value.code == Code.INVALID_ARGUMENT


def test_emulator_enforces_generation_match(gcs_root: str) -> None:
    """The guarantee our gs:// backend stands on: fake-gcs-server answers 412 to a stale write."""
    from google.api_core import exceptions as gexc

    from sax.store import _gcs_client

    bucket, _, prefix = gcs_root.removeprefix("gs://").partition("/")
    blob = _gcs_client().bucket(bucket).blob(f"{prefix}/probe")
    blob.upload_from_string(b"1", if_generation_match=0)
    first = blob.generation
    blob.upload_from_string(b"2", if_generation_match=first)
    with pytest.raises(gexc.PreconditionFailed):
        _gcs_client().bucket(bucket).blob(f"{prefix}/probe").upload_from_string(
            b"3", if_generation_match=first
        )
    assert _gcs_client().bucket(bucket).blob(f"{prefix}/probe").download_as_bytes() == b"2"
