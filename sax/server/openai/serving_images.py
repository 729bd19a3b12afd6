"""``POST /v1/images/generations``: a text-to-image servable's ``vm.generate`` (same ACL,
admission and stats), so ``openai.OpenAI(base_url=...).images.generate(model=..., prompt=...,
n=2, response_format="b64_json")`` works unchanged.

Images come back inline as base64 PNG: a ``response_format`` of ``url`` is a 400 (this server
hosts no files), and ``size`` must be the model's own size (set at publish with the
``image_size`` override) or ``auto``.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from sax.errors import invalid
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.openai.protocol import ImageData, ImageGenerationRequest, ImagesResponse
from sax.server.openai.serving import OpenAIServing
from sax.server.servable import Servable
from sax.server.vision import as_vision


def check_generation(
    body: ImageGenerationRequest, model_id: str, servable: Servable
) -> dict[str, Any]:
    """The request as ``vm.generate`` extra inputs; INVALID_ARGUMENT naming the field."""
    if "vm.generate" not in servable.methods:
        raise invalid(f"model {model_id} does not generate images", "model")
    if body.response_format == "url":
        raise invalid(
            "response_format 'url' is not supported: images are returned inline as b64_json",
            "response_format",
        )
    config = servable.config
    max_samples = int(getattr(config, "max_samples", 1))
    if body.n > max_samples:
        raise invalid(f"n must be at most {max_samples} for this model, got {body.n}", "n")
    if body.size not in (None, "auto"):
        native = int(getattr(servable, "image_size", 0))
        if body.size != f"{native}x{native}":
            raise invalid(
                f"size {body.size!r} is not served by this model; use 'auto' or "
                f"'{native}x{native}'",
                "size",
            )
    return {"num_samples": body.n}


def images_response(images: list[str]) -> ImagesResponse:
    return ImagesResponse(created=int(time.time()), data=[ImageData(b64_json=i) for i in images])


class OpenAIServingImages(OpenAIServing):
    async def create(
        self, body: ImageGenerationRequest, gates: GateFor, receive: Receive | None = None
    ) -> ImagesResponse:
        replica = self.server.loaded(body.model)
        servable = replica.servable
        extra = check_generation(body, replica.model_id, servable)
        gate = gates(replica, "vm.generate")
        images = await gate.run(
            partial(as_vision(servable, "vm.generate").text_to_image, body.prompt, extra),
            self.timeout_s,
            receive,
        )
        return images_response([i.image for i in images])
