"""The committed OpenAPI specs match the apps, and the generator reports drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sax import openapi_gen


def test_committed_specs_match_the_apps() -> None:
    generated = openapi_gen.generate()
    assert "admin.json" in generated
    for name, text in generated.items():
        committed = (openapi_gen.OPENAPI_DIR / name).read_text()
        assert committed == text, f"openapi/{name} is stale: run `python -m sax.openapi_gen`"


def test_admin_spec_documents_every_route_and_our_error_body() -> None:
    spec = json.loads(openapi_gen.render(openapi_gen.admin_spec()))
    assert set(spec["paths"]) >= {
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/locations",
        "/v1/models/{name}:wait",
        "/v1/stats",
        "/v1/servers",
        "/v1/servers:join",
        "/healthz",
    }
    for path in spec["paths"].values():
        for op in path.values():
            assert "422" not in op["responses"]
            assert op["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }


def test_check_mode_fails_on_drift_and_regeneration_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openapi_gen, "OPENAPI_DIR", tmp_path)
    (tmp_path / "admin.json").write_text("{}\n")
    assert openapi_gen.main(["--check"]) == 1
    assert openapi_gen.main([]) == 0
    assert openapi_gen.main(["--check"]) == 0
    assert json.loads((tmp_path / "admin.json").read_text())["info"]["title"] == "sax admin"
