"""Only enabled backends are imported, and one that fails to import is reported, not fatal.

A real model-server process runs with a ``jax`` package on its path whose import raises (what a
broken optional install does). With ``--backends=test`` it never imports it; with
``--backends=test,jax`` it reports the failure in its joins (so the admin never places JAX models
there), on ``/readyz``, ``/v1/status`` and the admin's status page, and still serves the test
servable.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.cell import ECHO, RealCell
from tests.helpers import wait_for


def _broken_jax(tmp: Path) -> dict[str, str]:
    pkg = tmp / "broken" / "jax"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise ImportError("this jax install is broken")\n')
    return {"PYTHONPATH": str(tmp / "broken")}


def test_a_broken_optional_backend_is_reported_and_the_rest_serves(tmp_path: Path) -> None:
    env = _broken_jax(tmp_path)
    with RealCell(tmp_path) as cell:
        (_, only_test), (_, with_jax) = (
            cell.model_server(flags=("--backends=test",), env=env),
            cell.model_server(flags=("--backends=test,jax",), env=env),
        )
        servers = wait_for(
            lambda: (
                {s.address: s for s in cell.servers().servers}
                if len(cell.servers().servers) == 2
                else None
            ),
            timeout_s=30,
        )
        assert servers[only_test].backend_errors == {}
        assert "this jax install is broken" in servers[with_jax].backend_errors["jax"]
        assert not [p for p in servers[with_jax].model_paths if p.startswith("sax.models.jax")]
        assert ECHO in servers[with_jax].model_paths

        status = httpx.get(f"http://{with_jax}/v1/status", timeout=10).json()
        assert "this jax install is broken" in status["backend_errors"]["jax"]
        ready = httpx.get(f"http://{with_jax}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # the test backend still serves
        assert "this jax install is broken" in ready.json()["checks"]["backend jax"]
        page = httpx.get(f"http://{cell.admin_address}/", timeout=10).text
        assert "this jax install is broken" in page

        # A JAX model is never placed on the server whose JAX is broken.
        out = cell.saxutil("publish", "/sax/test/j", "sax.models.jax.Tiny", "None", "1")
        assert out.returncode == 0, out.stderr
        out = cell.saxutil("publish", "/sax/test/e", ECHO, "None", "2")
        assert out.returncode == 0, out.stderr
        done = cell.saxutil("wait", "/sax/test/e", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        info = cell.model("j")
        assert info.replicas == [] and info.ready_replicas == 0, info
        gen = cell.saxutil("lm.generate", "/sax/test/e", "hello")
        assert gen.returncode == 0 and "hello" in gen.stdout
