"""Secure by default, easy locally: what the real processes do with and without credentials."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sax.auth.principals import add_token
from sax.naming import CellId
from sax.store import CellStore
from tests.cell import CELL, RealCell
from tests.helpers import SAX, Proc, free_port, wait_for, wait_http


def sax(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAX, *args, f"--sax_cell={CELL}", f"--sax_root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_non_loopback_bind_without_credentials_needs_insecure(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert sax("admin-config", f"--fs_root={root}/fs", root=root).returncode == 0
    refused = sax("admin-server", "--host=0.0.0.0", f"--port={free_port()}", root=root)
    assert refused.returncode == 2 and "--insecure" in refused.stderr
    refused = sax("model-server", "--host=0.0.0.0", f"--port={free_port()}", root=root)
    assert refused.returncode == 2 and "--insecure" in refused.stderr

    port = free_port()
    args = [SAX, "admin-server", "--host=0.0.0.0", f"--port={port}", "--insecure"]
    admin = Proc([*args, f"--sax_cell={CELL}", f"--sax_root={root}"], tmp_path / "admin.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        assert "auth is OFF" in admin.output()
    finally:
        admin.stop()


def test_a_loopback_cell_says_auth_is_off_and_a_secured_one_wants_server_tokens(
    tmp_path: Path,
) -> None:
    with RealCell(tmp_path) as cell:
        proc, _ = cell.model_server()
        assert "auth is off" in cell.admin.output()
        wait_for(lambda: "auth is off" in proc.output())
        store = CellStore(cell.sax_root, CellId.parse(CELL))
        config = store.read_config()
        config, _ = add_token(config, "alice")
        store.create(config, exist_ok=True)
        refused = sax(
            "model-server", f"--port={free_port()}", "--backends=test", root=Path(cell.sax_root)
        )
        assert refused.returncode == 2 and "needs its own token" in refused.stderr
