"""One model server holding a tiny random-weight model of each vision kind, shared by the tests
here: loaded through the server's lifecycle (assignment -> LOADED) and served on uvicorn.

`images` makes test pictures in memory (PIL), so nothing is downloaded. Every async test here runs
on the session loop that owns the server.
"""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from sax.schemas import ReplicaStatus
from sax.server.manager import ModelServer
from tests.server.harness import assign, options, serving

CLASSIFIER = "sax.models.vision.ImageClassifier"
CLIP = "sax.models.vision.Clip"
DETECTOR = "sax.models.vision.Detector"
TEXT_TO_IMAGE = "sax.models.vision.TextToImage"
MAX_SIDE = 512  # the classifier's max_image_side override, to test the size check


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        func = getattr(item, "function", None)
        if here in Path(item.path).parents and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Served:
    server: ModelServer
    url: str


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vision_server() -> AsyncIterator[Served]:
    server = ModelServer(options())
    await server.apply(
        [
            assign("classifier", CLASSIFIER, overrides={"max_image_side": MAX_SIDE}),
            assign("clip", CLIP),
            assign("detector", DETECTOR, overrides={"score_threshold": 0.0}),
            assign("painter", TEXT_TO_IMAGE, overrides={"num_inference_steps": 2}),
            assign("echo"),
        ]
    )
    await server.settle(240)
    for model in server.replicas():
        assert model.status is ReplicaStatus.LOADED, (model.model_id, model.failure_reason)
    async with serving(server) as url:
        yield Served(server, url)
