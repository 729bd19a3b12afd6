"""What a saxutil command loads: each of ``ls``, ``publish`` and ``lm.generate`` runs in a fresh
interpreter against the fake cell, and the test looks at that process's modules and models.

A command pays for every import on its path at each start, so the server and engine stacks
(FastAPI, uvicorn, numpy, torch, JAX, vLLM) and httpx's own command line (rich, pygments, click)
must stay out of it, and pydantic must build only the models the command validates (the schema
module defers the rest). Structural checks, not timings: bench/cli.py measures the time.
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
import inspect, json, os, sys
from sax.cli.saxutil import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
import pydantic, sax.generation, sax.schemas
models = [
    c for m in (sax.schemas, sax.generation) for c in vars(m).values()
    if inspect.isclass(c) and issubclass(c, pydantic.BaseModel) and c.__module__ == m.__name__
]
print(json.dumps({
    "code": code,
    "modules": sorted({name.partition(".")[0] for name in sys.modules}),
    "models": len(models),
    "built": sorted(c.__name__ for c in models if c.__pydantic_complete__),
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
    ("args", "built"),
    [
        (("ls", "/sax/test"), ["Location", "ModelList"]),
        (
            ("publish", "/sax/test/new", "sax.models.test.Echo", "None", "1"),
            ["Location", "ModelInfo", "PublishRequest"],
        ),
        (
            ("lm.generate", "/sax/test/m", "hello"),
            ["GenerateRequest", "GenerateResponse", "Location", "Sample", "WatchResult"],
        ),
    ],
)
def test_a_command_loads_no_server_stack_and_builds_only_its_models(
    cell: FakeCell, args: tuple[str, ...], built: list[str]
) -> None:
    report = probe(cell, *args)
    assert not set(HEAVY) & set(report["modules"])
    assert report["models"] > 50  # the whole schema module was imported ...
    assert report["built"] == built  # ... and only these were built
    assert report["plugins"] == "__all__"  # no scan of every package's entry points


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
