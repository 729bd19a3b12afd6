"""The four vision kinds through the real model server app on uvicorn: Saxml ``vm.*`` routes,
OpenAI ``/v1/images/generations`` and image inputs on ``/v1/embeddings`` (openai SDK), bad input.

Answers over HTTP are compared with the same checkpoint run directly through transformers, so
a test fails if the server decodes, preprocesses, batches or post-processes wrongly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math

import httpx
import openai
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

from sax.backends.torch import tiny
from sax.models.vision import ImageClassifier
from tests.vision.conftest import MAX_SIDE, Served, b64, png


async def post(served: Served, model: str, method: str, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(f"{served.url}/v1/models/{model}/{method}", json=body)


def direct_classify(image: Image.Image) -> list[tuple[str, float]]:
    """The tiny classifier's top 3, computed with transformers alone."""
    path = str(tiny.classifier_dir())
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    pixels = AutoImageProcessor.from_pretrained(path)(images=[image], return_tensors="pt")
    with torch.no_grad():
        probs = model(**pixels).logits.softmax(-1)[0]
    scores, ids = probs.topk(3)
    return [(model.config.id2label[int(i)], float(s)) for s, i in zip(scores, ids, strict=True)]


async def test_classify_answers_like_the_model_itself(vision_server: Served) -> None:
    data = png((10, 200, 90))
    r = await post(
        vision_server,
        "classifier",
        "vm.classify",
        {"image_bytes": b64(data), "extra_inputs": {"top_k": 3}},
    )
    assert r.status_code == 200, r.text
    texts = r.json()["texts"]
    expected = direct_classify(Image.open(io.BytesIO(data)).convert("RGB"))
    assert [t["text"] for t in texts] == [label for label, _ in expected]
    assert [t["score"] for t in texts] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert texts[0]["score"] >= texts[1]["score"] >= texts[2]["score"] > 0


async def test_clip_embeds_images_and_text_in_one_space(vision_server: Served) -> None:
    data = png((30, 30, 220))
    image = await post(vision_server, "clip", "vm.embed", {"image_bytes": b64(data)})
    text = await post(vision_server, "clip", "lm.embed", {"text": "a blue circle"})
    assert image.status_code == 200 and text.status_code == 200, (image.text, text.text)
    iv, tv = image.json()["embedding"], text.json()["embedding"]
    assert len(iv) == len(tv) == 32
    assert math.isclose(sum(v * v for v in iv), 1.0, rel_tol=1e-5)
    assert math.isclose(sum(v * v for v in tv), 1.0, rel_tol=1e-5)

    path = str(tiny.clip_dir())
    model = AutoModel.from_pretrained(path).eval()
    pixels = AutoImageProcessor.from_pretrained(path)(
        images=[Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="pt"
    )
    with torch.no_grad():
        features = model.get_image_features(**pixels)
    features = getattr(features, "pooler_output", features)
    expected = torch.nn.functional.normalize(features, dim=-1)[0].tolist()
    assert iv == pytest.approx(expected, abs=1e-5)


async def test_detect_gives_boxes_inside_the_image(vision_server: Served) -> None:
    r = await post(vision_server, "detector", "vm.detect", {"image_bytes": b64(png(size=(64, 48)))})
    assert r.status_code == 200, r.text
    boxes = r.json()["bounding_boxes"]
    assert boxes, "score_threshold 0 keeps every query's box"
    assert [b["score"] for b in boxes] == sorted((b["score"] for b in boxes), reverse=True)
    for b in boxes:
        assert b["text"] in tiny.TINY_LABELS
        assert 0 <= b["cx"] - b["w"] / 2 - 1e-3 and b["cx"] + b["w"] / 2 <= 64 + 1e-3
        assert 0 <= b["cy"] - b["h"] / 2 - 1e-3 and b["cy"] + b["h"] / 2 <= 48 + 1e-3
    r = await post(
        vision_server,
        "detector",
        "vm.detect",
        {"image_bytes": b64(png()), "extra_inputs": {"score_threshold": 1.0}},
    )
    assert r.status_code == 200 and r.json()["bounding_boxes"] == []
    r = await post(
        vision_server, "detector", "vm.detect", {"image_bytes": b64(png()), "text": ["cat"]}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "text"


async def test_generate_makes_seeded_png_images(vision_server: Served) -> None:
    async def images(seed: int) -> list[bytes]:
        r = await post(
            vision_server,
            "painter",
            "vm.generate",
            {"text": "a cup of coffee", "extra_inputs": {"num_samples": 2, "seed": seed}},
        )
        assert r.status_code == 200, r.text
        return [base64.b64decode(i["image"]) for i in r.json()["images"]]

    first = await images(7)
    assert len(first) == 2 and first[0] != first[1]
    for data in first:
        picture = Image.open(io.BytesIO(data))
        assert picture.format == "PNG" and picture.size == (32, 32)
    assert await images(7) == first
    assert await images(8) != first


def cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("CMYK", (8, 8)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"image_bytes": "not base64!"}, "image_bytes", "base64"),
        ({"image_bytes": ""}, "image_bytes", "empty"),
        ({"image_bytes": b64(b"hello, not an image")}, "image_bytes", "not a decodable image"),
        ({"image_bytes": b64(png(size=(MAX_SIDE + 1, 8)))}, "image_bytes", "pixels"),
        ({"image_bytes": b64(cmyk_jpeg())}, "image_bytes", "mode CMYK"),
        (
            {"image_bytes": b64(png()), "extra_inputs": {"bogus": 1}},
            "extra_inputs.bogus",
            "unknown",
        ),
        (
            {"image_bytes": b64(png()), "extra_inputs": {"top_k": 0}},
            "extra_inputs.top_k",
            "between",
        ),
        ({"image_bytes": b64(png()), "extra": 1}, None, "extra"),
        ({}, None, "image_bytes"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    vision_server: Served, body: dict[str, object], param: str | None, words: str
) -> None:
    r = await post(vision_server, "classifier", "vm.classify", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and words in error["message"]
    if param is not None:
        assert error["param"] == param


async def test_methods_a_model_does_not_serve_are_400(vision_server: Served) -> None:
    r = await post(vision_server, "echo", "vm.classify", {"image_bytes": b64(png())})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"
    r = await post(vision_server, "classifier", "vm.detect", {"image_bytes": b64(png())})
    assert r.status_code == 400 and "it serves vm.classify" in r.json()["error"]["message"]


async def test_concurrent_requests_are_batched_with_the_same_answers(vision_server: Served) -> None:
    model = vision_server.server.get("/sax/test/classifier")
    assert model is not None
    servable = model.servable
    assert isinstance(servable, ImageClassifier) and servable.batcher is not None
    colors = [(i * 8, 255 - i * 8, 100) for i in range(32)]
    body = [{"image_bytes": b64(png(c)), "extra_inputs": {"top_k": 2}} for c in colors]
    alone = [(await post(vision_server, "classifier", "vm.classify", b)).json() for b in body[:4]]
    before = servable.batcher.stats.peak_batch_size
    assert before == 1  # so far, one request at a time
    async with httpx.AsyncClient(base_url=vision_server.url, timeout=60) as http:
        replies = await asyncio.gather(
            *(http.post("/v1/models/classifier/vm.classify", json=b) for b in body)
        )
    assert all(r.status_code == 200 for r in replies)
    assert servable.batcher.stats.peak_batch_size > 1
    for single, batched in zip(alone, replies, strict=False):
        got = batched.json()["texts"]
        assert [t["text"] for t in got] == [t["text"] for t in single["texts"]]
        assert [t["score"] for t in got] == pytest.approx(
            [t["score"] for t in single["texts"]], abs=1e-5
        )
    stats = model.report().method_stats["vm.classify"]
    assert stats.successes_per_second > 0


def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


async def test_openai_images_generate(vision_server: Served) -> None:
    client = sdk(vision_server)
    result = await asyncio.to_thread(
        client.images.generate,
        model="painter",
        prompt="a rocket launch",
        n=2,
        size="32x32",  # type: ignore[arg-type]
        response_format="b64_json",
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (32, 32)
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(
            client.images.generate, model="painter", prompt="x", response_format="url"
        )
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(
            client.images.generate,
            model="painter",
            prompt="x",
            size="1024x1024",
        )
    assert err.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(client.images.generate, model="classifier", prompt="x")
    assert err.value.body["param"] == "model"  # type: ignore[index]


async def test_openai_embeddings_take_image_data_urls(vision_server: Served) -> None:
    data = png((120, 60, 200))
    url = "data:image/png;base64," + b64(data)
    client = sdk(vision_server)
    result = await asyncio.to_thread(client.embeddings.create, model="clip", input=[url, url])
    direct = (await post(vision_server, "clip", "vm.embed", {"image_bytes": b64(data)})).json()
    assert result.data[0].embedding == pytest.approx(direct["embedding"], abs=1e-6)
    assert result.data[1].embedding == pytest.approx(direct["embedding"], abs=1e-6)
    text = await asyncio.to_thread(client.embeddings.create, model="clip", input="a blue circle")
    assert len(text.data[0].embedding) == 32
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(client.embeddings.create, model="clip", input=[url, "a cat"])
    assert err.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        bad = "data:image/png;base64," + b64(b"no image")
        await asyncio.to_thread(client.embeddings.create, model="clip", input=["a", bad][1:])
    assert err.value.body["param"] == "input[0]"  # type: ignore[index]
