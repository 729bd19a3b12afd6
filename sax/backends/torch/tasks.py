"""Loaded vision models and their batch functions (run on a `Batcher` thread, never the loop).

Each task loads a Hugging Face model directory (``config.json`` + safetensors + preprocessor
config; a diffusers ``model_index.json`` for text to image) with the Auto classes, so a tiny
twin from `sax.backends.torch.tiny` and a published checkpoint take the same path. Batch
functions take a list of per-request inputs and return one output per input, in order.

- `Classifier`: image classification; per image the top-k labels with softmax probabilities.
- `ClipEmbedder`: image and text embeddings in one space (CLIP), L2-normalised, so the dot
  product of an image's and a caption's embedding is their cosine similarity.
- `Detector`: DETR-style object detection; boxes as Saxml's ``(cx, cy, w, h)`` in pixels of the
  input image, with label and score, above a score threshold.
- `TextToImage`: a diffusers pipeline (Stable Diffusion layout); images per prompt, each with its
  own seeded generator so a request's images do not depend on what it was batched with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _ImageModel:
    """A transformers model directory loaded with `auto` (an Auto class) in `dtype`, on one
    device in eval mode, with its image processor; `labels` from its config (index -> name)."""

    def __init__(self, auto: Any, model_dir: Path, dtype: str, device: str) -> None:
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(str(model_dir))
        self.device = pick_device(device)
        model = auto.from_pretrained(str(model_dir), dtype=_dtype(dtype))
        self.model = model.to(self.device).eval()
        self.labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}

    def inputs(self, images: list[Image.Image]) -> tuple[torch.Tensor, Any]:
        """The processor's output for `images` and its pixel values on the model's device."""
        inputs = self.processor(images=images, return_tensors="pt")
        return inputs["pixel_values"].to(self.device, self.model.dtype), inputs


@dataclass(frozen=True)
class ClassifyItem:
    image: Image.Image
    top_k: int


@dataclass(frozen=True)
class DetectItem:
    image: Image.Image
    threshold: float


@dataclass(frozen=True)
class Box:
    cx: float
    cy: float
    w: float
    h: float
    label: str
    score: float


@dataclass(frozen=True)
class GenerateItem:
    prompt: str
    num_images: int
    seed: int


class Classifier(_ImageModel):
    def __init__(self, model_dir: Path, dtype: str = "float32", device: str = "auto") -> None:
        from transformers import AutoModelForImageClassification

        super().__init__(AutoModelForImageClassification, model_dir, dtype, device)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @torch.inference_mode()
    def classify(self, items: list[ClassifyItem]) -> list[list[tuple[str, float]]]:
        pixels, _ = self.inputs([i.image for i in items])
        probs = self.model(pixel_values=pixels).logits.float().softmax(-1).cpu()
        out = []
        for row, item in zip(probs, items, strict=True):
            scores, ids = row.topk(min(item.top_k, row.shape[-1]))
            out.append([(self.labels[int(i)], float(s)) for s, i in zip(scores, ids, strict=True)])
        return out


class ClipEmbedder(_ImageModel):
    def __init__(self, model_dir: Path, dtype: str = "float32", device: str = "auto") -> None:
        from transformers import AutoModel, AutoTokenizer

        super().__init__(AutoModel, model_dir, dtype, device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _rows(features: Any) -> list[list[float]]:
        if not isinstance(features, torch.Tensor):  # transformers 5 returns a model output
            features = features.pooler_output
        features = torch.nn.functional.normalize(features.float(), dim=-1).cpu()
        return [row.tolist() for row in features]

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> list[list[float]]:
        pixels, _ = self.inputs(images)
        return self._rows(self.model.get_image_features(pixel_values=pixels))

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        inputs = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        return self._rows(
            self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
            )
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class Detector(_ImageModel):
    def __init__(self, model_dir: Path, dtype: str = "float32", device: str = "auto") -> None:
        from transformers import AutoModelForObjectDetection

        super().__init__(AutoModelForObjectDetection, model_dir, dtype, device)

    @torch.inference_mode()
    def detect(self, items: list[DetectItem]) -> list[list[Box]]:
        images = [i.image for i in items]
        pixels, inputs = self.inputs(images)
        mask = inputs.get("pixel_mask")
        outputs = self.model(
            pixel_values=pixels, pixel_mask=None if mask is None else mask.to(self.device)
        )
        sizes = torch.tensor([(im.height, im.width) for im in images], device=self.device)
        results = self.processor.post_process_object_detection(
            outputs, threshold=min(i.threshold for i in items), target_sizes=sizes
        )
        out = []
        for result, item in zip(results, items, strict=True):
            boxes = []
            for (x0, y0, x1, y1), label, score in zip(
                result["boxes"].tolist(),
                result["labels"].tolist(),
                result["scores"].tolist(),
                strict=True,
            ):
                if score < item.threshold:
                    continue
                boxes.append(
                    Box(
                        cx=(x0 + x1) / 2,
                        cy=(y0 + y1) / 2,
                        w=x1 - x0,
                        h=y1 - y0,
                        label=self.labels.get(int(label), str(label)),
                        score=float(score),
                    )
                )
            boxes.sort(key=lambda b: -b.score)
            out.append(boxes)
        return out


class TextToImage:
    def __init__(
        self,
        model_dir: Path,
        *,
        steps: int,
        guidance_scale: float,
        size: int | None = None,
        dtype: str = "float32",
        device: str = "auto",
    ) -> None:
        from diffusers import DiffusionPipeline

        self.device = pick_device(device)
        self.pipeline = DiffusionPipeline.from_pretrained(str(model_dir), dtype=_dtype(dtype))
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.steps = steps
        self.guidance_scale = guidance_scale
        unet = self.pipeline.unet.config
        scale = getattr(self.pipeline, "vae_scale_factor", 8)
        self.size = size or int(unet.sample_size) * scale

    @torch.inference_mode()
    def generate(self, items: list[GenerateItem]) -> list[list[Image.Image]]:
        prompts = [i.prompt for i in items for _ in range(i.num_images)]
        generators = [
            torch.Generator().manual_seed(i.seed + k) for i in items for k in range(i.num_images)
        ]
        images = self.pipeline(
            prompt=prompts,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=generators,
            height=self.size,
            width=self.size,
            output_type="pil",
        ).images
        out, start = [], 0
        for item in items:
            out.append(list(images[start : start + item.num_images]))
            start += item.num_images
        return out
