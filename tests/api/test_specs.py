"""The specs read well to their consumers: operation ids are function names in generated clients
(unique per app, snake_case, no path or HTTP-method residue, Saxml methods named after
themselves), and no operation documents the 422 that sax never sends (it answers 400)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from sax import openapi_gen

SPECS = {"admin": openapi_gen.admin_spec, "model": openapi_gen.model_spec}
EXPECTED = {
    "admin": {
        ("POST", "/v1/models"): "publish",
        ("GET", "/v1/models"): "list_models",
        ("GET", "/v1/models/{name}"): "get_model",
        ("PATCH", "/v1/models/{name}"): "update_model",
        ("DELETE", "/v1/models/{name}"): "unpublish",
        ("GET", "/v1/models/{name}/locations"): "watch_locations",
        ("POST", "/v1/models/{name}:wait"): "wait_for_ready",
        ("GET", "/v1/servers"): "list_servers",
        ("POST", "/v1/servers:join"): "join",
    },
    "model": {
        ("POST", "/v1/models/{name}/lm.generate"): "lm_generate",
        ("POST", "/v1/models/{name}/lm.generate_stream"): "lm_generate_stream",
        ("POST", "/v1/models/{name}/lm.score"): "lm_score",
        ("POST", "/v1/models/{name}/lm.embed"): "lm_embed",
        ("POST", "/v1/models/{name}/vm.classify"): "vm_classify",
        ("POST", "/v1/completions"): "create_completion",
        ("POST", "/v1/chat/completions"): "create_chat_completion",
        ("POST", "/v1/embeddings"): "create_embedding",
        ("GET", "/v1/models"): "list_models",
    },
}


def operation_ids(spec: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): op["operationId"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


@pytest.mark.parametrize("app", sorted(SPECS))
def test_operation_ids_read_as_function_names(app: str) -> None:
    ids = operation_ids(SPECS[app]())
    assert {key: ids.get(key) for key in EXPECTED[app]} == EXPECTED[app]
    repeated = [name for name, n in Counter(ids.values()).items() if n > 1]
    assert repeated == []
    for name in ids.values():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
        assert not re.search(r"(^|_)v1(_|$)|_(get|post|put|patch|delete)$", name), name


@pytest.mark.parametrize("app", sorted(SPECS))
def test_specs_document_no_422(app: str) -> None:
    spec = SPECS[app]()
    documented = {
        status
        for path in spec["paths"].values()
        for op in path.values()
        for status in op["responses"]
    }
    assert "422" not in documented
    assert "400" in documented or "default" in documented
    assert not {"HTTPValidationError", "ValidationError"} & set(spec["components"]["schemas"])
