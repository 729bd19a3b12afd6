"""Images on the wire: base64 in JSON, checked before any engine sees them.

`decode_image` turns a request field into an RGB `PIL.Image.Image` or raises INVALID_ARGUMENT that
names the field and says what was wrong (not base64, too many bytes, not an image, too few or too
many pixels, a pixel mode that has no RGB reading). Decoding is fully done here (``load()``), so a
truncated file fails as a 400 and never inside a batch. `encode_png` is the way back.

Accepted modes: RGB, RGBA (alpha dropped), L and LA (grey), P (palette), 1 (bilevel); 16-bit,
float and CMYK images are refused rather than silently rescaled.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from sax.errors import invalid

RGB_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P", "1"})


@dataclass(frozen=True)
class ImageLimits:
    """What one image may be: encoded size in bytes, and each side in pixels."""

    max_bytes: int = 8 << 20
    min_side: int = 1
    max_side: int = 4096


def decode_base64(field: str, data: str, max_bytes: int) -> bytes:
    """Strict base64 (a ``data:image/...;base64,`` URL prefix is allowed) -> bytes."""
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or not head.endswith(";base64"):
            raise invalid(f"{field}: a data URL must be 'data:<type>;base64,<data>'", field)
    # Each 4 base64 characters carry 3 bytes: refuse an oversized field before decoding it.
    if len(data) // 4 * 3 > max_bytes + 3:
        raise invalid(f"{field}: image is larger than {max_bytes} bytes", field)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"{field}: not valid base64 ({exc})", field) from exc
    if not raw:
        raise invalid(f"{field}: empty image", field)
    if len(raw) > max_bytes:
        raise invalid(f"{field}: image is {len(raw)} bytes, more than {max_bytes}", field)
    return raw


def open_image(field: str, raw: bytes, limits: ImageLimits) -> Image.Image:
    """Encoded image bytes -> a fully decoded RGB image within `limits`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if not (
                limits.min_side <= min(width, height) and max(width, height) <= limits.max_side
            ):
                raise invalid(
                    f"{field}: image is {width}x{height} pixels; each side must be between "
                    f"{limits.min_side} and {limits.max_side}",
                    field,
                )
            if image.mode not in RGB_MODES:
                raise invalid(
                    f"{field}: image mode {image.mode} is not supported "
                    f"(use one of {', '.join(sorted(RGB_MODES))})",
                    field,
                )
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise invalid(f"{field}: not a decodable image ({exc})", field) from exc
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(field: str, data: str, limits: ImageLimits | None = None) -> Image.Image:
    """A base64 field -> an RGB image; INVALID_ARGUMENT naming `field` when it is not one."""
    limits = limits or ImageLimits()
    return open_image(field, decode_base64(field, data, limits.max_bytes), limits)


def encode_png(image: Image.Image) -> str:
    """An image -> base64 PNG text."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
