"""Image fields on the wire (`sax.server.images`): what decodes, and the 400s for what does not."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from sax.errors import Code, SaxError
from sax.server.images import ImageLimits, decode_image, encode_png


def encoded(image: Image.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGB", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF")]
)
def test_decodes_to_rgb(mode: str, fmt: str) -> None:
    image = decode_image("image_bytes", encoded(Image.new(mode, (5, 3)), fmt))
    assert image.mode == "RGB" and image.size == (5, 3)


def test_data_url_and_round_trip() -> None:
    picture = Image.new("RGB", (4, 4), (1, 2, 3))
    text = encode_png(picture)
    again = decode_image("x", "data:image/png;base64," + text)
    assert again.getpixel((0, 0)) == (1, 2, 3)


def truncated_png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()[:60]).decode()


@pytest.mark.parametrize(
    ("data", "limits", "words"),
    [
        ("***", None, "not valid base64"),
        ("", None, "empty image"),
        ("data:image/png,abc", None, "data URL"),
        (base64.b64encode(b"plain text").decode(), None, "not a decodable image"),
        (truncated_png(), None, "not a decodable image"),
        (encoded(Image.new("RGB", (20, 4))), ImageLimits(max_side=16), "20x4 pixels"),
        (encoded(Image.new("RGB", (2, 2))), ImageLimits(min_side=3), "2x2 pixels"),
        (encoded(Image.new("RGB", (64, 64))), ImageLimits(max_bytes=16), "larger than 16 bytes"),
        (encoded(Image.new("I;16", (4, 4))), None, "mode I;16"),
        (encoded(Image.new("CMYK", (4, 4)), "JPEG"), None, "mode CMYK"),
    ],
)
def test_bad_images_name_the_field(data: str, limits: ImageLimits | None, words: str) -> None:
    with pytest.raises(SaxError) as err:
        decode_image("input[3]", data, limits)
    assert err.value.code is Code.INVALID_ARGUMENT
    assert err.value.param == "input[3]"
    assert words in err.value.message and err.value.message.startswith("input[3]")
