"""``POST /v1/embeddings``: texts through ``lm.embed``, image data URLs through ``vm.embed``.

An input that is an image data URL (``data:image/png;base64,...``) is embedded as an image by a
model that serves ``vm.embed`` (a CLIP-style model embeds text and images in one space); one
request takes either texts or images, so each runs under its own method's ACL. ``base64``
encoding is little-endian float32, what the openai SDK asks for by default.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Awaitable, Callable
from functools import partial

from sax.batch import run_all
from sax.errors import invalid
from sax.request_errors import public_params
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.openai.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, usage
from sax.server.openai.serving import OpenAIServing, require
from sax.server.servable import Servable
from sax.server.vision import as_vision

IMAGE_DATA_URL = "data:image/"


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


def embedding_data(index: int, vector: list[float], encoding: str) -> EmbeddingData:
    """`base64` is little-endian float32, what the openai SDK asks for by default."""
    if encoding == "base64":
        raw = struct.pack(f"<{len(vector)}f", *vector)
        return EmbeddingData(index=index, embedding=base64.b64encode(raw).decode())
    return EmbeddingData(index=index, embedding=vector)


class OpenAIServingEmbedding(OpenAIServing):
    async def create(
        self, body: EmbeddingRequest, gates: GateFor, receive: Receive | None = None
    ) -> EmbeddingResponse:
        replica = self.loaded(body.model)
        inputs = body.inputs()
        method = embedding_method(inputs)
        require(replica, method, "embeddings")
        servable = replica.servable
        gate = gates(replica, method)
        calls = embedding_calls(servable, inputs)
        with public_params({"prompt": "input"}):
            vectors = await gate.run(
                partial(run_all, calls), self.timeout_s, receive, cost=len(inputs)
            )
        encoding = body.encoding_format or "float"
        prompt_tokens = 0 if method == "vm.embed" else sum(servable.count_tokens(t) for t in inputs)
        return EmbeddingResponse(
            data=[embedding_data(i, v, encoding) for i, v in enumerate(vectors)],
            model=body.model,
            usage=usage(prompt_tokens, []),
        )
