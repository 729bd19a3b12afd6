"""The interface of servables that serve Saxml's vision methods (``vm.*``), and their extra inputs.

Routes hand a `VisionServable` the request's image as the base64 text it arrived in, with the
name of the field it came from; the servable decodes and checks it (`sax.server.images`) off the
event loop, so a bad image is a 400 that names that field (``image_bytes`` on ``vm.*``,
``input[2]`` on OpenAI ``/v1/embeddings``).

`vision_extra` parses a vision request's ``extra_inputs`` against a table of the keys the servable
takes: an unknown key, a wrong type or a value out of range is INVALID_ARGUMENT naming
``extra_inputs.<key>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sax.errors import invalid
from sax.schemas import BoundingBox, GeneratedImage, ScoredText
from sax.server.servable import Servable

IMAGE_FIELD = "image_bytes"


@dataclass(frozen=True)
class ExtraKey:
    """One extra input: its type (int or float), default and inclusive range."""

    kind: type
    default: float
    lo: float
    hi: float


def vision_extra(extra: Mapping[str, Any], keys: Mapping[str, ExtraKey]) -> dict[str, Any]:
    """`extra` checked against `keys`, with defaults filled in."""
    out: dict[str, Any] = {name: k.kind(k.default) for name, k in keys.items()}
    for name, value in extra.items():
        param = f"extra_inputs.{name}"
        key = keys.get(name)
        if key is None:
            known = ", ".join(sorted(keys)) or "none"
            raise invalid(f"{param}: unknown extra input (this model takes: {known})", param)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"{param} must be a number, got {value!r}", param)
        if key.kind is int and not float(value).is_integer():
            raise invalid(f"{param} must be an integer, got {value!r}", param)
        if not math.isfinite(value) or not key.lo <= value <= key.hi:
            raise invalid(
                f"{param} must be between {key.lo:g} and {key.hi:g}, got {value!r}", param
            )
        out[name] = key.kind(value)
    return out


class VisionServable(Servable):
    """A servable with ``vm.*`` methods; each raises UNIMPLEMENTED unless overridden.

    Images are base64 text (`image`), decoded by the servable; `field` names where it came from.
    """

    async def classify(
        self, image: str, extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[ScoredText]:
        """Top-k labels, best first, with probabilities."""
        raise self._unimplemented("vm.classify")

    async def embed_image(
        self, image: str, extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[float]:
        """The image's embedding (L2-normalised where the model shares a space with text)."""
        raise self._unimplemented("vm.embed")

    async def text_to_image(self, text: str, extra: Mapping[str, Any]) -> list[GeneratedImage]:
        """Images (PNG, base64) for a prompt, each with a score."""
        raise self._unimplemented("vm.generate")

    async def detect(
        self, image: str, texts: list[str], extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[BoundingBox]:
        """Boxes in pixels of the image, best first."""
        raise self._unimplemented("vm.detect")


def as_vision(servable: Servable, method: str) -> VisionServable:
    """`servable` as a `VisionServable`; UNIMPLEMENTED for one that serves no vision method."""
    if not isinstance(servable, VisionServable):
        raise servable._unimplemented(method)
    return servable
