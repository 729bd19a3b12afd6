"""schemathesis fuzzes the model server's generation routes on a real vLLM engine (the tiny
random-weight Llama): ``lm.generate``, ``lm.generate_stream``, ``lm.score`` and the OpenAI
completions, chat and embeddings routes. Whatever the sampling fields say, the answer is a
non-5xx that conforms to the spec, and every request the spec forbids is a 4xx."""

from __future__ import annotations

import schemathesis
from schemathesis import Case

from sax.models.vllm import Tiny
from sax.openapi_gen import OPENAPI_DIR
from tests.api.conftest import TINY_NAME, EchoCell
from tests.api.test_schemathesis import CONFIG, aim

ROUTES = (
    r"/lm\.generate$|/lm\.generate_stream$|/lm\.score$|^/v1/(chat/)?completions$|^/v1/embeddings$"
)
SCHEMA = schemathesis.openapi.from_path(
    OPENAPI_DIR / "model.json",
    config=schemathesis.Config.from_dict(
        {**CONFIG, "generation": {**CONFIG["generation"], "max-examples": 15}}
    ),
).include(path_regex=ROUTES)


@SCHEMA.parametrize()
def test_vllm_routes_conform_and_never_fail(case: Case, tiny_cell: EchoCell) -> None:
    aim(case, TINY_NAME, Tiny.methods)
    case.call_and_validate(base_url=tiny_cell.model_url, timeout=120)
