"""Benchmark: vision servables' images/s through sax against the same model called directly.

Run by hand; prints ONE JSON line. Per servable (classifier, CLIP image embedding, detector,
text to image), four figures in one run on the same loaded weights:

- ``direct_loop``: the model's batch function called in a Python loop, one image at a time
  (on a worker thread, as the server runs it);
- ``direct_batched``: the same function called once per 32 images;
- ``sax_1``: a real model server (uvicorn on loopback, its own process) called over HTTP with
  224x224 JPEGs, one request at a time;
- ``sax_32``: the same with 32 requests in flight, which the server's `Batcher` batches.

    .venv/bin/python bench/vision.py                    # the tiny random-weight twins
    .venv/bin/python bench/vision.py --arch base        # ViT-B/16 sized classifier and CLIP
    .venv/bin/python bench/vision.py --only classifier --requests 256 --threads 1

Weights are random (no vision weights ship offline), which does not change the work per image.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from PIL import Image

from sax.backends.torch import tiny
from sax.backends.torch.tasks import ClassifyItem, DetectItem, GenerateItem
from sax.models import assets
from sax.models.vision import TorchVisionServable
from sax.schemas import Assignment
from sax.server import registry
from sax.server.main import uvicorn_server
from sax.server.manager import ModelServer, spec_of
from sax.server.options import ServerOptions

CELL = "/sax/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photo(i: int, size: int = 224) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def encoded(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def _build_base_classifier(out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = [f"label_{i}" for i in range(1000)]
    config = ViTConfig(
        id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)}
    )
    ViTForImageClassification(config).save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(out)


def _build_base_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = tiny.caption_tokenizer(max_length=77)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={"image_size": 224, "patch_size": 16},
    )
    CLIPModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(out)


KINDS: dict[str, dict[str, Any]] = {
    "classifier": {
        "path": "sax.models.vision.ImageClassifier",
        "method": "vm.classify",
        "lane": "classify",
        "item": lambda im: ClassifyItem(im, 5),
        "body": lambda im, i: {"image_bytes": encoded(im)},
    },
    "clip": {
        "path": "sax.models.vision.Clip",
        "method": "vm.embed",
        "lane": "image",
        "item": lambda im: im,
        "body": lambda im, i: {"image_bytes": encoded(im)},
    },
    "detector": {
        "path": "sax.models.vision.Detector",
        "method": "vm.detect",
        "lane": "detect",
        "item": lambda im: DetectItem(im, 0.5),
        "body": lambda im, i: {"image_bytes": encoded(im)},
    },
    "text_to_image": {
        "path": "sax.models.vision.TextToImage",
        "method": "vm.generate",
        "lane": "generate",
        "item": lambda im: GenerateItem("a photo of a cat", 1, 0),
        "body": lambda im, i: {"text": f"a photo of a cat #{i}"},
        "overrides": {"num_inference_steps": 4, "max_batch_size": 32},
        "requests_scale": 0.25,
    },
}


def rate(n: int, seconds: float) -> float:
    return float(f"{n / seconds:.3g}")


def direct(lane: Callable[[list[Any]], Any], items: list[Any], batch: int) -> float:
    lane(items[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        lane(items[i : i + batch])
    return rate(len(items), time.perf_counter() - start)


async def over_http(url: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    queue = list(bodies)
    async with httpx.AsyncClient(timeout=600) as http:
        await http.post(url, json=bodies[0])  # warm-up

        async def worker() -> None:
            while queue:
                body = queue.pop()
                r = await http.post(url, json=body)
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return rate(len(bodies), time.perf_counter() - start)


def set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _serve(spec: Assignment, port: int, ready: Any, threads: int) -> None:
    """The model server process: loads `spec`, serves it on `port`, sets `ready` when up."""
    set_threads(threads)

    async def run() -> None:
        server = ModelServer(ServerOptions(cell=CELL, port=port, sax_root="memory://bench-vision"))
        await server.apply([spec])
        await server.settle(600)
        http = uvicorn_server(server, graceful_s=1)
        serving = asyncio.create_task(http.serve())
        while not http.started:  # noqa: ASYNC110 (uvicorn exposes no started event)
            await asyncio.sleep(0.01)
        ready.set()
        await serving

    asyncio.run(run())


async def bench_kind(
    name: str, spec: dict[str, Any], arch: str, requests: int, checkpoint: str, threads: int
) -> dict[str, Any]:
    if arch == "base" and checkpoint == "None" and name in ("classifier", "clip"):
        builder = _build_base_classifier if name == "classifier" else _build_base_clip
        checkpoint = str(assets.cached_dir(f"bench-{name}-base-v2", builder))
    n = max(32, int(requests * spec.get("requests_scale", 1.0)))
    assignment = Assignment(
        model_id=f"{CELL}/{name}",
        model_path=spec["path"],
        checkpoint_path=checkpoint,
        overrides=dict(spec.get("overrides", {})),
    )
    images = [photo(i) for i in range(n)]
    bodies = [spec["body"](im, i) for i, im in enumerate(images)]

    # The model called directly, in this process; on a thread like the server's batcher (torch's
    # intra-op threads behave differently when called from the main thread of a busy machine).
    cls = registry.resolve(spec["path"])
    servable = cls(spec_of(assignment))
    assert isinstance(servable, TorchVisionServable)
    await servable.load()
    assert servable.batcher is not None
    lane = servable.batcher.lanes[spec["lane"]]
    items = [spec["item"](im) for im in images]
    result: dict[str, Any] = {
        "direct_loop": await asyncio.to_thread(direct, lane, items, 1),
        "direct_batched": await asyncio.to_thread(direct, lane, items, 32),
    }
    await servable.unload()

    # The same model behind a real model server in its own process, over HTTP.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    port = free_port()
    proc = context.Process(target=_serve, args=(assignment, port, ready, threads), daemon=True)
    proc.start()
    try:
        if not await asyncio.to_thread(ready.wait, 600):
            raise RuntimeError(f"the model server for {name} did not start")
        url = f"http://127.0.0.1:{port}/v1/models/{name}/{spec['method']}"
        result["sax_1"] = await over_http(url, bodies[: max(8, n // 4)], 1)
        result["sax_32"] = await over_http(url, bodies, 32)
    finally:
        proc.terminate()
        proc.join(30)
    result["sax_32_vs_direct_loop"] = float(f"{result['sax_32'] / result['direct_loop']:.3g}")
    result["sax_32_vs_sax_1"] = float(f"{result['sax_32'] / result['sax_1']:.3g}")
    result["requests"] = n
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--only", choices=list(KINDS), action="append")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="kind=path: bench a real checkpoint"
    )
    args = parser.parse_args()
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    set_threads(args.threads)
    out: dict[str, Any] = {
        "bench": "vision",
        "arch": args.arch,
        "image_side": 224,
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
    }
    for name in args.only or list(KINDS):
        out[name] = await bench_kind(
            name,
            KINDS[name],
            args.arch,
            args.requests,
            checkpoints.get(name, "None"),
            args.threads,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
