"""Swagger UI and ReDoc on both apps render in a real browser with no network beyond loopback.

Headless Chromium (Debian's ``chromium``; ``make test`` installs it) loads ``/docs`` and
``/redoc`` with every host name but 127.0.0.1 unresolvable, runs the page's scripts, and dumps
the DOM: each operation of the app's spec must be rendered (Swagger UI gives it the element id
``operations-<tag>-<operationId>``, ReDoc the anchor ``operation/<operationId>``). A page that
pulled its scripts from a CDN would stay blank.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import EchoCell

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # Virtual time pauses while fetches are pending, so this bounds script time, not the fetch
    # of /openapi.json on a busy machine.
    "--virtual-time-budget=30000",
)


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "headless Chromium is needed: apt-get install chromium (make test does)"
    return path


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after its scripts ran, from a fresh Chromium profile."""
    run = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def operations(spec: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    """(tag, operationId) of every operation, as Swagger UI groups them."""
    return [
        ((op.get("tags") or ["default"])[0], op["operationId"])
        for path in spec["paths"].values()
        for op in path.values()
    ]


SCRIPTS = {"docs": "swagger-ui-bundle.js", "redoc": "redoc.standalone.js"}
PAGES = [(app, page) for app in ("admin", "model") for page in SCRIPTS]


@pytest.mark.parametrize(("app", "page"), PAGES)
def test_docs_page_loads_nothing_from_outside(echo_cell: EchoCell, app: str, page: str) -> None:
    base = echo_cell.admin_url if app == "admin" else echo_cell.model_url
    html = httpx.get(f"{base}/{page}", timeout=10)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assert any(u.endswith(SCRIPTS[page]) for u in urls), urls
    assert [u for u in urls if "//" in u] == []
    for url in urls:
        if url.startswith("/"):
            assert httpx.get(f"{base}{url}", timeout=10).status_code == 200, url


@pytest.mark.parametrize(("app", "page"), PAGES)
def test_docs_render_every_operation_offline(
    echo_cell: EchoCell, app: str, page: str, tmp_path: Path
) -> None:
    base = echo_cell.admin_url if app == "admin" else echo_cell.model_url
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    expected = operations(spec)
    assert len(expected) >= 10

    dom = rendered_dom(f"{base}/{page}", tmp_path / "profile")

    if page == "docs":
        rendered = set(re.findall(r'id="operations-([^"]+)"', dom))
        missing = [f"{tag}-{op}" for tag, op in expected if f"{tag}-{op}" not in rendered]
    else:
        rendered = set(re.findall(r"operation/([A-Za-z0-9_]+)", dom))
        missing = [op for _, op in expected if op not in rendered]
    assert missing == [], f"not rendered: {missing}"
    assert spec["info"]["title"] in dom
