"""Real vLLM engines shared across tests: each takes 15-30 s to start on CPU.

`model_server` is a real `ModelServer` that loads Tiny once, through its public lifecycle
(`apply` an assignment, wait for LOADED), and serves it with the real app on uvicorn on a
loopback port. `tiny` is that same loaded servable, so the HTTP tests and the in-process tests
share one generate engine. `minilm` is the pooling engine, started for the embedding module only.

Everything runs on the session event loop (vLLM's output handler lives on the loop that first
used the engine), so every async test in this directory runs with ``loop_scope="session"``.
Teardown unloads every model, so no engine process outlives the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn

from sax.model_app import create_app
from sax.models.vllm import MiniLML6, Tiny, VllmServable
from sax.schemas import Assignment, ReplicaStatus
from sax.server.manager import ModelServer
from sax.server.options import ServerOptions
from sax.server.servable import LoadSpec
from tests.helpers import free_port

# Small KV caches: the tests need a few thousand tokens, and CPU memory is shared. float32, not
# the 16-bit default, because tests compare scores and embeddings with float32 references.
TINY_OVERRIDES = {"kv_cache_gib": 0.25, "max_model_len": 512, "dtype": "float32"}
MINILM_OVERRIDES = {"kv_cache_gib": 0.125, "dtype": "float32"}
TINY_ID = "/sax/test/tiny"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs every async test here on the session loop that owns the engines."""
    here = Path(__file__).parent
    for item in items:
        func = getattr(item, "function", None)
        if here in Path(item.path).parents and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@dataclass
class Served:
    server: ModelServer
    url: str  # http://127.0.0.1:<port>


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def model_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    port = free_port()
    root = tmp_path_factory.mktemp("sax_root")
    server = ModelServer(ServerOptions(sax_root=str(root), cell="/sax/test", port=port))
    await server.apply(
        [
            Assignment(
                model_id=TINY_ID,
                model_path="sax.models.vllm.Tiny",
                checkpoint_path="None",
                overrides=TINY_OVERRIDES,
            )
        ]
    )
    http = uvicorn.Server(
        uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(http.serve())
    try:
        await server.wait_until(lambda: server.status(TINY_ID) is not ReplicaStatus.LOADING, 300)
        model = server.get(TINY_ID)
        assert model is not None and model.status is ReplicaStatus.LOADED, model
        while not http.started:  # noqa: ASYNC110 (uvicorn exposes no started event)
            await asyncio.sleep(0.01)
        yield Served(server, f"http://127.0.0.1:{port}")
    finally:
        http.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        await server.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tiny(model_server: Served) -> Tiny:
    model = model_server.server.get(TINY_ID)
    assert model is not None
    servable = model.servable
    assert isinstance(servable, Tiny)
    return servable


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def minilm() -> AsyncIterator[MiniLML6]:
    servable = MiniLML6(
        LoadSpec("/sax/test/minilm", "sax.models.vllm.MiniLML6", "None", MINILM_OVERRIDES)
    )
    await servable.load()
    try:
        yield servable
    finally:
        await servable.unload()


async def wait_running(servable: VllmServable, count: int, timeout_s: float = 10.0) -> None:
    """Waits until the servable's engine tracks `count` unfinished requests."""
    engine = servable.engine
    assert engine is not None
    async with asyncio.timeout(timeout_s):
        while engine.num_unfinished != count:  # noqa: ASYNC110 (engine state, no event to wait on)
            await asyncio.sleep(0.002)
