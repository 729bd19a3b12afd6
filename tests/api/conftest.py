"""One real cell for the API-consumer tests: an admin process and a model server process
(test backend) serving the deterministic Echo servable as ``/sax/test/echo``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cell import CELL, ECHO, RealCell
from tests.helpers import wait_for

ECHO_NAME = "echo"


class EchoCell:
    """The cell, the model server's data address, and base URLs of both apps."""

    def __init__(self, cell: RealCell, data_address: str) -> None:
        self.cell = cell
        self.data_address = data_address
        self.admin_url = f"http://{cell.admin_address}"
        self.model_url = f"http://{data_address}"


@pytest.fixture(scope="package")
def echo_cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoCell]:
    with RealCell(tmp_path_factory.mktemp("api-cell")) as cell:
        _, address = cell.model_server()
        reply = httpx.post(
            f"http://{cell.admin_address}/v1/models",
            json={
                "model_id": f"{CELL}/{ECHO_NAME}",
                "model_path": ECHO,
                "checkpoint_path": "None",
                "num_replicas": 1,
            },
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        wait_for(lambda: cell.loaded(ECHO_NAME) == [address], timeout_s=30)
        yield EchoCell(cell, address)
