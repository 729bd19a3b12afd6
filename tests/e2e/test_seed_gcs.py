"""The seed walkthrough with sax_root and fs_root on gs:// (the fake-gcs-server emulator of
tests/gcs.py, which every child process reaches through the inherited environment):
``sax admin-config``, ``sax admin-server``, ``sax model-server``, then ``saxutil publish``,
``ls``, ``lm.generate`` and ``unpublish`` through the real binaries."""

from __future__ import annotations

import json
from pathlib import Path

from sax.naming import CellId
from sax.store import CellStore, StateStore
from tests.cell import CELL, ECHO, RealCell
from tests.helpers import wait_for

QUESTION = "Who is Harry Potter's mother?"


def test_seed_walkthrough_on_gcs(gcs_root: str, tmp_path: Path) -> None:
    with RealCell(tmp_path, sax_root=gcs_root, fs_root=f"{gcs_root}/fs") as cell:
        server, address = cell.model_server()
        run = cell.saxutil("publish", "/sax/test/echo", ECHO, "None", "1")
        assert run.returncode == 0, run.stderr
        # Write-through: the publish is in state.json on GCS before saxutil returned.
        state, _ = StateStore(cell.fs_root, CellId.parse(CELL)).read()
        assert [m.model_id for m in state.models] == ["/sax/test/echo"]

        def loaded() -> bool:
            run = cell.saxutil("ls", "/sax/test/echo", "--json")
            assert run.returncode == 0, run.stderr
            replicas = json.loads(run.stdout)["replicas"]
            return [(r["address"], r["status"]) for r in replicas] == [(address, "LOADED")]

        wait_for(loaded, timeout_s=30, interval_s=0.2)

        run = cell.saxutil("lm.generate", "/sax/test/echo", QUESTION)
        assert run.returncode == 0, run.stderr
        assert QUESTION in run.stdout

        run = cell.saxutil("unpublish", "/sax/test/echo")
        assert run.returncode == 0, run.stderr
        run = cell.saxutil("ls", "/sax/test", "--json")
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"models": []}

        location, _ = CellStore(cell.sax_root, CellId.parse(CELL)).read_location()
        assert location is not None and location.address == cell.admin_address
        assert f"Joined {cell.admin_address}" in server.output()
