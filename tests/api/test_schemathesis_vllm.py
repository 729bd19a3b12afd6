"""schemathesis fuzzes the model server's generation routes on a real vLLM engine (the tiny
random-weight Llama): ``lm.generate``, ``lm.generate_stream``, ``lm.score`` and the OpenAI
completions, chat and embeddings routes. Whatever the sampling fields say, the answer is a
non-5xx that conforms to the spec, and every request the spec forbids is a 4xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from schemathesis import Case

from sax.models.vllm import Tiny
from sax.openapi_gen import OPENAPI_DIR
from tests.api.test_schemathesis import CONFIG, aim
from tests.cell import CELL, RealCell
from tests.helpers import wait_for

TINY = "tiny"
# Small KV cache and context: requests are short, and CPU memory is shared.
OVERRIDES = {"kv_cache_gib": 0.25, "max_model_len": 512}
ROUTES = (
    r"/lm\.generate$|/lm\.generate_stream$|/lm\.score$|^/v1/(chat/)?completions$|^/v1/embeddings$"
)
SCHEMA = schemathesis.openapi.from_path(
    OPENAPI_DIR / "model.json",
    config=schemathesis.Config.from_dict(
        {**CONFIG, "generation": {**CONFIG["generation"], "max-examples": 15}}
    ),
).include(path_regex=ROUTES)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a model server process holding Tiny on vLLM, LOADED."""
    with RealCell(tmp_path_factory.mktemp("vllm-cell")) as cell:
        _, address = cell.model_server(flags=["--backends=vllm"])
        reply = httpx.post(
            f"http://{cell.admin_address}/v1/models",
            json={
                "model_id": f"{CELL}/{TINY}",
                "model_path": "sax.models.vllm.Tiny",
                "checkpoint_path": "None",
                "num_replicas": 1,
                "overrides": OVERRIDES,
            },
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        wait_for(lambda: cell.loaded(TINY) == [address], timeout_s=300, interval_s=0.5)
        yield f"http://{address}"


@SCHEMA.parametrize()
def test_vllm_routes_conform_and_never_fail(case: Case, tiny_server: str) -> None:
    aim(case, TINY, Tiny.methods)
    case.call_and_validate(base_url=tiny_server, timeout=120)
