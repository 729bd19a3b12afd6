"""Byte sizes of the server's flags: the inputs they always took, with binary units."""

from __future__ import annotations

import pytest

from sax.server.options import parse_byte_size

SIZES = [
    ("0", 0),
    ("123", 123),
    ("16GiB", 16 << 30),
    ("512MiB", 512 << 20),
    ("2G", 2 << 30),
    ("2g", 2 << 30),
    ("2GB", 2 << 30),
    ("1.5k", 1536),
    ("16gib", 16 << 30),
    (" 1T ", 1 << 40),
]


@pytest.mark.parametrize(("text", "size"), SIZES)
def test_byte_sizes(text: str, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1", "12 parsecs"])
def test_bad_byte_sizes_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_size(text)
