"""One real cell for the API-consumer tests: an admin process and a model server process with
the test and vLLM backends, serving the deterministic Echo servable as ``/sax/test/echo`` and
the tiny random-weight Llama on vLLM as ``/sax/test/tiny``. Both are published at once, so the
engine loads while the tests that need only Echo run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cell import CELL, ECHO, RealCell
from tests.helpers import free_port, wait_for, wait_http

ECHO_NAME = "echo"
TINY_NAME = "tiny"
# Small KV cache and context: requests are short, and CPU memory is shared.
TINY_OVERRIDES = {"kv_cache_gib": 0.25, "max_model_len": 512}


class EchoCell:
    """The cell, the model server's data address, and base URLs of both apps."""

    def __init__(self, cell: RealCell, data_address: str) -> None:
        self.cell = cell
        self.data_address = data_address
        self.admin_url = f"http://{cell.admin_address}"
        self.model_url = f"http://{data_address}"


def publish(cell: RealCell, name: str, model_path: str, overrides: dict[str, Any]) -> None:
    reply = httpx.post(
        f"http://{cell.admin_address}/v1/models",
        json={
            "model_id": f"{CELL}/{name}",
            "model_path": model_path,
            "checkpoint_path": "None",
            "num_replicas": 1,
            "overrides": overrides,
        },
        timeout=10,
    )
    assert reply.status_code == 201, reply.text


@pytest.fixture(scope="package")
def echo_cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoCell]:
    """The cell once Echo is LOADED (Tiny may still be loading)."""
    with RealCell(tmp_path_factory.mktemp("api-cell")) as cell:
        port = free_port()
        address = f"127.0.0.1:{port}"
        cell.start(["model-server", f"--port={port}", "--backends=test,vllm"], "model-server")
        wait_http(f"http://{address}/healthz", timeout_s=180)  # vLLM imports before serving
        publish(cell, TINY_NAME, "sax.models.vllm.Tiny", TINY_OVERRIDES)
        publish(cell, ECHO_NAME, ECHO, {})
        wait_for(lambda: cell.loaded(ECHO_NAME) == [address], timeout_s=60)
        yield EchoCell(cell, address)


@pytest.fixture(scope="package")
def tiny_cell(echo_cell: EchoCell) -> EchoCell:
    """The same cell once Tiny is LOADED too."""
    address = echo_cell.data_address
    wait_for(lambda: echo_cell.cell.loaded(TINY_NAME) == [address], timeout_s=300, interval_s=0.5)
    return echo_cell
