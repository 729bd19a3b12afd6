"""A cell serving one model of each vision kind end to end: ``sax model-server --backends=torch``
behind a real admin, models published with saxutil, then called through saxutil, the sync and
async Python clients and curl.

The classifier and CLIP checkpoints are trained by the test (`tests.vision.trained`) and
published by path, so the answers can be checked for being right: the classifier names the
colour of a picture it has not seen, and a picture is closer to its own caption than to another
colour's. The detector and the painter run their random-weight twins.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import sax
from sax.client.async_model import AsyncModel
from tests.cell import RealCell
from tests.helpers import wait_for
from tests.vision.trained import caption, color_png, train_classifier, train_clip

CELL = "/sax/test"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision-checkpoints")
    return {
        "classifier": train_classifier(root / "classifier"),
        "clip": train_clip(root / "clip"),
    }


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_four_vision_models_through_a_cell(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    pictures = {c: tmp_path / f"{c}.png" for c in ("red", "green", "blue")}
    for color, path in pictures.items():
        path.write_bytes(color_png(color))
    with RealCell(tmp_path) as cell:
        server, address = cell.model_server(flags=["--backends=torch"])
        published = [
            ("classifier", "sax.models.vision.ImageClassifier", str(checkpoints["classifier"])),
            ("clip", "sax.models.vision.Clip", str(checkpoints["clip"])),
            ("detector", "sax.models.vision.Detector", "None", "score_threshold=0.0"),
            ("painter", "sax.models.vision.TextToImage", "None", "num_inference_steps=2"),
        ]
        for name, path, ckpt, *overrides in published:
            run = cell.saxutil("publish", f"{CELL}/{name}", path, ckpt, "1", *overrides)
            assert run.returncode == 0, run.stderr
        names = [p[0] for p in published]
        wait_for(
            lambda: all(cell.loaded(n) == [address] for n in names), timeout_s=240, interval_s=0.5
        )

        # saxutil: the trained classifier names each colour.
        for color, path in pictures.items():
            run = cell.saxutil("vm.classify", "--json", f"{CELL}/classifier", str(path))
            assert run.returncode == 0, run.stderr
            texts = json.loads(run.stdout)["texts"]
            assert texts[0]["text"] == color and texts[0]["score"] > 0.5, texts

        # saxutil: a picture is closer to its own caption than to another colour's.
        run = cell.saxutil("vm.embed", "--json", f"{CELL}/clip", str(pictures["red"]))
        assert run.returncode == 0, run.stderr
        image = json.loads(run.stdout)["embedding"]
        texts = {}
        for color in ("red", "blue"):
            run = cell.saxutil("lm.embed", "--json", f"{CELL}/clip", caption(color))
            assert run.returncode == 0, run.stderr
            texts[color] = json.loads(run.stdout)["embedding"]
        assert dot(image, texts["red"]) > dot(image, texts["blue"])

        run = cell.saxutil("vm.detect", "--json", f"{CELL}/detector", str(pictures["green"]))
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["bounding_boxes"]
        run = cell.saxutil("vm.detect", f"{CELL}/detector", str(pictures["green"]))
        assert run.returncode == 0 and "label_" in run.stdout  # the table names the labels

        out = tmp_path / "painted"
        run = cell.saxutil(
            "vm.generate", f"{CELL}/painter", "a rocket launch", "--out", str(out),
            "--extra", "num_samples:2",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        files = sorted(p.name for p in out.iterdir())
        assert files == ["0001.PNG", "0002.PNG"]
        assert Image.open(out / "0001.PNG").size == (32, 32)

        # Bad input: a text file is no image; the error names the field.
        note = tmp_path / "note.txt"
        note.write_text("not an image")
        run = cell.saxutil("vm.classify", f"{CELL}/classifier", str(note))
        assert run.returncode == 1 and "image_bytes" in run.stderr

        # The sync client.
        blue = color_png("blue", seed=7)
        classifier = sax.Model(f"{CELL}/classifier", sax_root=cell.sax_root, timeout=60)
        assert classifier.vm.classify(blue)[0][0] == "blue"
        painter = sax.Model(f"{CELL}/painter", sax_root=cell.sax_root, timeout=60)
        [(data, score)] = painter.vm.generate("a cup of coffee", {"seed": 3})
        assert Image.open(io.BytesIO(data)).format == "PNG" and score == 0.0
        detector = sax.Model(f"{CELL}/detector", sax_root=cell.sax_root, timeout=60)
        assert detector.vm.detect(blue)[0].score > 0

        # The async client: the same answers.
        async def aio() -> tuple[str, list[float], list[float]]:
            label = (
                await AsyncModel(f"{CELL}/classifier", sax_root=cell.sax_root).vm.classify(blue)
            )[0][0]
            clip = AsyncModel(f"{CELL}/clip", sax_root=cell.sax_root)
            return label, await clip.vm.embed(blue), await clip.lm.embed(caption("blue"))

        label, image_vec, text_vec = asyncio.run(aio())
        assert label == "blue"
        sync_vec = sax.Model(f"{CELL}/clip", sax_root=cell.sax_root).vm.embed(blue)
        assert image_vec == pytest.approx(sync_vec, abs=1e-6)
        assert dot(image_vec, text_vec) > dot(image_vec, texts["red"])

        # curl, straight to the model server.
        body = tmp_path / "body.json"
        body.write_text(
            json.dumps({"image_bytes": base64.b64encode(color_png("green", 9)).decode()})
        )
        reply = subprocess.run(
            ["curl", "-sS", "-H", "content-type: application/json", "--data-binary", f"@{body}",
             f"http://{address}/v1/models/classifier/vm.classify"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(reply.stdout)["texts"][0]["text"] == "green"
        assert "Traceback" not in server.output()
