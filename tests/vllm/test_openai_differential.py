"""sax's OpenAI-compatible routes against vLLM's own OpenAI server on the same Tiny weights.

Every variant of `bench/openai_compat.py` (valid and invalid requests) goes to the session's
sax model server and to ``python -m vllm.entrypoints.openai.api_server`` started once here;
each must agree on status class, error param, shape, finish_reason, usage and greedy text, or
differ for a reason the harness documents.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bench.openai_compat import run_variants, variants, vllm_server
from sax.models import assets
from tests.vllm.conftest import Served


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def vllm_url() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="vllm-openai-") as work:
        async with vllm_server(assets.tiny_llama_dir(seed=0), Path(work)) as url:
            yield url


@pytest.mark.timeout(900)  # vLLM's server starts in 30-60 s, then 70+ variants on both
async def test_every_variant_agrees_with_vllm_or_differs_on_purpose(
    model_server: Served, vllm_url: str
) -> None:
    rows = await run_variants(model_server.url, vllm_url)
    assert len(rows) >= 60
    unexplained = [r for r in rows if not r["agree"] and not r["reason"]]
    assert not unexplained, unexplained
    # The valid requests agree outright: texts, finish reasons and usage included.
    agreed = {r["variant"] for r in rows if r["agree"]}
    for name in (
        "completion greedy",
        "completion context limit",
        "chat stream usage",
        "completion batch of 3",
        "completion stream echo",
        "chat penalties",
    ):
        assert name in agreed, name
    # Never a 5xx from sax.
    assert all(not r["sax"].startswith("5") for r in rows), rows
    assert {v.name for v in variants()} == {r["variant"] for r in rows}
