"""What a saxutil command loads: each of ``ls``, ``publish`` and ``lm.generate`` runs in a fresh
interpreter against the fake cell, and the test looks at that process's modules and models.

A command pays for every import on its path at each start, so the server and engine stacks
(FastAPI, uvicorn, numpy, torch, JAX, vLLM) must stay out of it, and the three commands users
run most make their one request through `sax.client.direct`: no event loop, no loop thread,
no httpx and no pydantic (the asyncio client's stack, over 100 ms a start). Structural checks,
not timings: bench/cli.py measures the time.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from typing import Any

import pytest

from sax.cli.saxutil import skip_pydantic_plugins
from sax.client import http
from tests.client.fakes import FakeCell

HEAVY = (
    "pydantic",
    "pydantic_core",
    "httpx",
    "httpcore",
    "anyio",
    "asyncio",
    "tenacity",
    "fastapi",
    "starlette",
    "uvicorn",
    "numpy",
    "torch",
    "jax",
    "vllm",
    "transformers",
    "rich",
    "pygments",
    "click",
)

# Runs saxutil's `main` with argv[1:], then reports on the process as one JSON line.
PROBE = """
import json, os, sys, threading
from sax.cli.saxutil import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({
    "code": code,
    # httpx._main: the stub that keeps httpx's own CLI out, should httpx be imported
    "modules": sorted({n.partition(".")[0] for n in sys.modules if n != "httpx._main"}),
    "sax": sorted(name for name in sys.modules if name.startswith("sax.")),
    "threads": threading.active_count(),
    "plugins": os.environ.get("PYDANTIC_DISABLE_PLUGINS"),
}))
"""


def probe(cell: FakeCell, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, f"--sax_root={cell.sax_root}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    assert report["code"] == 0, run.stdout + run.stderr
    return report


@pytest.mark.parametrize(
    "args",
    [
        ("ls", "/sax/test"),
        ("ls", "/sax/test/m"),
        ("publish", "/sax/test/new", "sax.models.test.Echo", "None", "1"),
        ("lm.generate", "/sax/test/m", "hello"),
        ("lm.generate", "--terse", "/sax/test/m", "hello"),
    ],
)
def test_a_command_makes_its_call_without_the_asyncio_client(
    cell: FakeCell, args: tuple[str, ...]
) -> None:
    report = probe(cell, *args)
    assert not set(HEAVY) & set(report["modules"])
    assert "sax.client.direct" in report["sax"]
    assert not {"sax.schemas", "sax.store", "sax.client.portal"} & set(report["sax"])
    assert report["threads"] == 1  # no loop thread was started
    assert report["plugins"] == "__all__"  # were pydantic loaded: no entry-point scan


def test_json_output_validates_with_the_schema_but_stays_off_asyncio(cell: FakeCell) -> None:
    """``--json`` prints the reply as the client's pydantic model dumps it (every field, in
    schema order), still without the asyncio client."""
    report = probe(cell, "lm.generate", "--json", "/sax/test/m", "hello")
    assert "pydantic" in report["modules"] and "sax.schemas" in report["sax"]
    assert not {"asyncio", "httpx", "anyio"} & set(report["modules"])


def test_a_users_pydantic_plugin_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")
    skip_pydantic_plugins()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    skip_pydantic_plugins()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"


async def test_the_client_loads_no_ca_bundle_and_still_verifies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cell traffic is plain HTTP: building the client loads no trust store (httpx's default
    loads certifi's bundle, ~30 ms per process), and its TLS context still requires a verified
    certificate, so an https URL would fail closed."""
    loaded: list[object] = []
    monkeypatch.setattr(
        ssl.SSLContext, "load_verify_locations", lambda self, *a, **kw: loaded.append(a)
    )
    await http.close_async_client()
    http.async_client()
    await http.close_async_client()
    assert loaded == []
    context = http.plain_http_tls()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
