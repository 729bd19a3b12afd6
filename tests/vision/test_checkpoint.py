"""Vision checkpoints published on gs:// (the fake-gcs-server emulator), in Hugging Face layout:
a classifier the test trains and saves answers right after the round trip, and a diffusers
pipeline (nested model directories) makes the same image as from its local directory."""

from __future__ import annotations

import base64
from pathlib import Path

import fsspec
import pytest

from sax.backends.torch import tiny
from sax.models.vision import ImageClassifier, TextToImage
from sax.server.servable import LoadSpec
from tests.vision.trained import color_png, train_classifier


def upload(local: Path, url: str) -> str:
    fs, root = fsspec.core.url_to_fs(url)
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(f), f"{root}/{f.relative_to(local)}")
    return url


async def test_a_trained_classifier_from_gs_names_the_colour(
    gcs_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAX_CACHE", str(tmp_path / "cache"))
    url = upload(train_classifier(tmp_path / "trained"), f"{gcs_root}/ckpt/colours")
    servable = ImageClassifier(LoadSpec("/sax/test/colours", "x", url))
    await servable.load()
    try:
        for color in ("red", "green", "blue"):
            image = base64.b64encode(color_png(color, seed=5)).decode()
            labels = await servable.classify(image, {"top_k": 3})
            assert labels[0].text == color
            assert sorted(t.text for t in labels) == ["blue", "green", "red"]
    finally:
        await servable.unload()


async def test_a_diffusers_pipeline_from_gs_matches_its_local_directory(
    gcs_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAX_CACHE", str(tmp_path / "cache"))
    local = tiny.text_to_image_dir()
    url = upload(local, f"{gcs_root}/ckpt/painter")
    images = []
    for checkpoint in (url, str(local)):
        servable = TextToImage(
            LoadSpec("/sax/test/painter", "x", checkpoint, {"num_inference_steps": 2})
        )
        await servable.load()
        try:
            [image] = await servable.text_to_image("a blue circle", {"seed": 4})
            images.append(image.image)
        finally:
            await servable.unload()
    assert images[0] == images[1]
