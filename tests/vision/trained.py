"""Small vision checkpoints trained in-process, for tests that need answers that are right.

No vision weights can be had offline, so the tests train the tiny architectures for a few
seconds on pictures they draw: noisy solid colours, labelled and captioned by colour. The result
is a real (if narrow) classifier and CLIP model, saved in Hugging Face layout like any published
checkpoint.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sax.backends.torch import tiny

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
NAMES = tuple(COLORS)


def caption(color: str) -> str:
    return f"a photo of a {color} square"


def color_image(color: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    pixels = np.array(COLORS[color], dtype=np.float32) + rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype("uint8"))


def color_png(color: str, seed: int = 123, size: int = 48) -> bytes:
    out = io.BytesIO()
    color_image(color, np.random.default_rng(seed), size).save(out, format="PNG")
    return out.getvalue()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Trains on one intra-op thread: tiny models gain nothing from two, and on a busy machine
    two spinning threads make every step many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pixels(out: Path, images: list[Image.Image]) -> torch.Tensor:
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(out))
    return processor(images=images, return_tensors="pt")["pixel_values"]


def train_classifier(out: Path, steps: int = 40) -> Path:
    """A ViT that tells red, green and blue apart; saved to `out`."""
    rng = np.random.default_rng(0)
    model = tiny.build_classifier(out, labels=NAMES)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    with one_thread():
        for _ in range(steps):
            labels = rng.integers(0, len(NAMES), 16)
            pixels = _pixels(out, [color_image(NAMES[i], rng) for i in labels])
            loss = model(pixel_values=pixels, labels=torch.tensor(labels)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(out, safe_serialization=True)
    return out


def train_clip(out: Path, steps: int = 60) -> Path:
    """A CLIP model whose image of a colour is closest to that colour's caption; saved to `out`."""
    from transformers import AutoTokenizer

    rng = np.random.default_rng(1)
    model = tiny.build_clip(out)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    with one_thread():
        for _ in range(steps):
            order = [NAMES[i] for i in rng.permutation(len(NAMES))]
            pixels = _pixels(out, [color_image(c, rng) for c in order])
            text = tokenizer([caption(c) for c in order], padding=True, return_tensors="pt")
            loss = model(
                input_ids=text["input_ids"],
                attention_mask=text["attention_mask"],
                pixel_values=pixels,
                return_loss=True,
            ).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(out, safe_serialization=True)
    return out
