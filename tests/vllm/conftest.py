"""One real vLLM engine per kind for the whole session: engines take 15-30 s to start on CPU.

`tiny` is the Tiny generate engine every generate/score/HTTP test shares; `minilm` is the one
pooling engine, started only by the tests that embed. Both run on the session event loop
(vLLM's output handler lives on the loop that first used the engine), so every async test in
this directory runs with ``loop_scope="session"``. Teardown shuts each engine down, so no engine
process outlives the session.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sax.models.vllm import MiniLML6, Tiny
from sax.server.servable import LoadSpec

# Small KV caches: the tests need a few thousand tokens, and CPU memory is shared.
TINY_OVERRIDES = {"kv_cache_gib": 0.25, "max_model_len": 512}
MINILM_OVERRIDES = {"kv_cache_gib": 0.125}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs every async test here on the session loop that owns the engines."""
    here = Path(__file__).parent
    for item in items:
        func = getattr(item, "function", None)
        if here in Path(item.path).parents and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tiny() -> AsyncIterator[Tiny]:
    servable = Tiny(LoadSpec("/sax/test/tiny", "sax.models.vllm.Tiny", "None", TINY_OVERRIDES))
    await servable.load()
    try:
        yield servable
    finally:
        await servable.unload()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def minilm() -> AsyncIterator[MiniLML6]:
    servable = MiniLML6(
        LoadSpec("/sax/test/minilm", "sax.models.vllm.MiniLML6", "None", MINILM_OVERRIDES)
    )
    await servable.load()
    try:
        yield servable
    finally:
        await servable.unload()
