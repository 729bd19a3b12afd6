"""OpenAI-compatible images and image embeddings: ``POST /v1/images/generations`` and image inputs
on ``/v1/embeddings``.

``/v1/images/generations`` runs a text-to-image servable's ``vm.generate`` (same ACL, admission
and stats), so ``openai.OpenAI(base_url=...).images.generate(model=..., prompt=..., n=2,
response_format="b64_json")`` works unchanged. Images come back inline as base64 PNG: a
``response_format`` of ``url`` is a 400 (this server hosts no files), and ``size`` must be the
model's own size (set at publish with the ``image_size`` override) or ``auto``.

On ``/v1/embeddings`` an input that is an image data URL (``data:image/png;base64,...``) is
embedded as an image by a model that serves ``vm.embed`` (a CLIP-style model embeds text and
images in one space); one request takes either texts or images, so each runs under its own
method's ACL.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sax.errors import invalid
from sax.server.servable import Servable
from sax.server.vision import as_vision

IMAGE_DATA_URL = "data:image/"


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    model: str
    n: int = Field(1, ge=1, description="images; at most the model's max_samples")
    size: str | None = Field(None, description="'auto' or the model's own 'WxH'")
    response_format: Literal["b64_json", "url"] | None = Field(
        None, description="b64_json only: images come back inline"
    )
    output_format: Literal["png"] | None = None
    quality: str | None = Field(None, description="accepted and ignored")
    style: str | None = Field(None, description="accepted and ignored")
    user: str | None = Field(None, description="accepted and ignored")


class ImageData(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


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


def is_image_input(text: str) -> bool:
    return text.startswith(IMAGE_DATA_URL)


def embedding_method(inputs: list[str]) -> str:
    """``vm.embed`` when every input is an image data URL, ``lm.embed`` when none is."""
    images = [is_image_input(t) for t in inputs]
    if all(images):
        return "vm.embed"
    if any(images):
        raise invalid(
            "input: send either texts or image data URLs in one request, not both", "input"
        )
    return "lm.embed"


def embedding_calls(
    servable: Servable, inputs: list[str]
) -> list[Callable[[], Awaitable[list[float]]]]:
    """One embed call per input: images through ``vm.embed`` (errors name ``input[i]``)."""
    if embedding_method(inputs) == "vm.embed":
        vision = as_vision(servable, "vm.embed")
        return [
            partial(vision.embed_image, data, {}, f"input[{i}]") for i, data in enumerate(inputs)
        ]
    return [partial(servable.embed, text, {}) for text in inputs]
