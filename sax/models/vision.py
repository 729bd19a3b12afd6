"""Vision servables on the torch backend (`sax.backends.torch`): what ``model_path`` names.

Checkpoint ``None`` loads the class's tiny random-weight twin (built in-process, cached); any
other checkpoint is a local directory or ``gs://`` URL in Hugging Face layout (transformers for
the classifier, CLIP and DETR; a diffusers pipeline for text to image), loaded the same way. No
PyPI package ships weights for these tasks that install beside this torch, so real models come
from published checkpoints.

- `ImageClassifier`: ``vm.classify`` (any ``AutoModelForImageClassification``: ViT, ConvNeXt...).
- `Clip`: ``vm.embed`` and ``lm.embed`` in one space (a CLIP model), so an image and a caption
  compare by the dot product of their embeddings; OpenAI ``/v1/embeddings`` takes both.
- `Detector`: ``vm.detect`` (any ``AutoModelForObjectDetection``: DETR, ...).
- `TextToImage`: ``vm.generate`` and OpenAI ``/v1/images/generations`` (a Stable Diffusion
  pipeline). A diffusion sample has no likelihood, so each image's score is 0.0.

Every model runs on one `Batcher` thread: concurrent requests of a method are batched up to
``max_batch_size``, waiting at most ``batch_wait_ms`` for company.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from sax.backends.torch import tiny
from sax.backends.torch.batcher import Batcher, BatchFn
from sax.errors import invalid, unavailable
from sax.models import assets
from sax.schemas import BoundingBox, GeneratedImage, ScoredText
from sax.server.images import ImageLimits, decode_image, encode_png
from sax.server.registry import register
from sax.server.servable import LoadSpec, ServableConfig
from sax.server.vision import IMAGE_FIELD, ExtraKey, VisionServable, vision_extra

_MIB = 1 << 20


class VisionConfig(ServableConfig):
    """Overridable settings every vision servable has."""

    max_batch_size: int = 32
    batch_wait_ms: float = 2.0
    dtype: str = "float32"
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else "cpu"
    max_image_bytes: int = 8 * _MIB
    max_image_side: int = 4096


class ClassifierConfig(VisionConfig):
    top_k: int = 5


class DetectorConfig(VisionConfig):
    score_threshold: float = 0.5


class TextToImageConfig(VisionConfig):
    max_batch_size: int = 8
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    image_size: int = 0  # pixels per side; 0 = the model's native size
    max_samples: int = 4


class TorchVisionServable(VisionServable):
    """Loads a model directory into task objects and serves them through one `Batcher`."""

    backend: ClassVar[str] = "torch"
    Config: ClassVar[type[ServableConfig]] = VisionConfig
    config: VisionConfig
    weights_bytes: ClassVar[int] = 64 * _MIB  # memory estimate for a random-weight twin
    # The `sax.backends.torch.tasks` class the model loads as (imported with torch, on load), and
    # batch lane -> the task's batch method.
    task_class: ClassVar[str] = ""
    lanes: ClassVar[Mapping[str, str]] = {}

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        self.batcher: Batcher | None = None

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        return cls.weights_bytes

    @abc.abstractmethod
    def tiny_dir(self) -> Path:
        """The random-weight twin's directory (checkpoint None)."""

    def build(self, model_dir: Path) -> dict[str, BatchFn]:
        """Loads the model as its `task_class` (in a worker thread); returns its batch lanes."""
        from sax.backends.torch import tasks

        task = getattr(tasks, self.task_class)
        self.task = task(model_dir, self.config.dtype, self.config.device)
        return {lane: getattr(self.task, method) for lane, method in self.lanes.items()}

    def model_dir(self) -> Path:
        if self.spec.random_weights:
            return self.tiny_dir()
        return assets.fetch_checkpoint(self.spec.checkpoint_path)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.config.max_image_bytes, max_side=self.config.max_image_side
        )

    def _build_locked(self) -> dict[str, BatchFn]:
        # transformers and diffusers build models under process-wide patches (meta-device
        # initialisation); two threads building at once corrupt each other's modules.
        with assets.MODEL_BUILD_LOCK:
            return self.build(self.model_dir())

    async def load(self) -> None:
        lanes = await asyncio.to_thread(self._build_locked)
        self.batcher = Batcher(
            lanes,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.batch_wait_ms / 1000,
        ).start()

    async def unload(self) -> None:
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            await batcher.close()

    def health(self) -> str | None:
        """Why the model can no longer serve (its device thread died), else None."""
        return self.batcher.dead_reason() if self.batcher is not None else None

    async def run(self, lane: str, item: Any) -> Any:
        batcher = self.batcher
        if batcher is None:
            raise unavailable(f"model {self.spec.model_id} is not loaded")
        return await batcher.run(lane, item)

    async def image(self, data: str, field: str) -> Image.Image:
        """A request's base64 image, decoded and checked off the event loop."""
        return await asyncio.to_thread(decode_image, field, data, self.limits)


@register("sax.models.vision.ImageClassifier")
class ImageClassifier(TorchVisionServable):
    methods: ClassVar[frozenset[str]] = frozenset({"vm.classify"})
    Config: ClassVar[type[ServableConfig]] = ClassifierConfig
    config: ClassifierConfig

    task_class = "Classifier"
    lanes = {"classify": "classify"}

    def tiny_dir(self) -> Path:
        return tiny.classifier_dir()

    async def classify(
        self, image: str, extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[ScoredText]:
        from sax.backends.torch.tasks import ClassifyItem

        opts = vision_extra(
            extra, {"top_k": ExtraKey(int, self.config.top_k, 1, self.task.num_labels)}
        )
        picture = await self.image(image, field)
        labels = await self.run("classify", ClassifyItem(picture, opts["top_k"]))
        return [ScoredText(text=t, score=s) for t, s in labels]


@register("sax.models.vision.Clip")
class Clip(TorchVisionServable):
    methods: ClassVar[frozenset[str]] = frozenset({"vm.embed", "lm.embed"})

    task_class = "ClipEmbedder"
    lanes = {"image": "embed_images", "text": "embed_texts"}

    def tiny_dir(self) -> Path:
        return tiny.clip_dir()

    async def embed_image(
        self, image: str, extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[float]:
        vision_extra(extra, {})
        vector: list[float] = await self.run("image", await self.image(image, field))
        return vector

    async def embed(self, text: str, extra: Mapping[str, Any]) -> list[float]:
        vision_extra(extra, {})
        vector: list[float] = await self.run("text", text)
        return vector

    def count_tokens(self, text: str) -> int:
        return self.task.count_tokens(text)


@register("sax.models.vision.Detector")
class Detector(TorchVisionServable):
    methods: ClassVar[frozenset[str]] = frozenset({"vm.detect"})
    Config: ClassVar[type[ServableConfig]] = DetectorConfig
    config: DetectorConfig

    task_class = "Detector"
    lanes = {"detect": "detect"}

    def tiny_dir(self) -> Path:
        return tiny.detector_dir()

    async def detect(
        self, image: str, texts: list[str], extra: Mapping[str, Any], field: str = IMAGE_FIELD
    ) -> list[BoundingBox]:
        from sax.backends.torch.tasks import DetectItem

        if texts:
            raise invalid(
                f"text: model {self.spec.model_id} detects a fixed label set and takes no "
                "open-set text",
                "text",
            )
        opts = vision_extra(
            extra, {"score_threshold": ExtraKey(float, self.config.score_threshold, 0.0, 1.0)}
        )
        picture = await self.image(image, field)
        boxes = await self.run("detect", DetectItem(picture, opts["score_threshold"]))
        return [
            BoundingBox(cx=b.cx, cy=b.cy, w=b.w, h=b.h, text=b.label, score=b.score) for b in boxes
        ]


@register("sax.models.vision.TextToImage")
class TextToImage(TorchVisionServable):
    methods: ClassVar[frozenset[str]] = frozenset({"vm.generate"})
    Config: ClassVar[type[ServableConfig]] = TextToImageConfig
    config: TextToImageConfig

    def tiny_dir(self) -> Path:
        return tiny.text_to_image_dir()

    def build(self, model_dir: Path) -> dict[str, BatchFn]:
        from sax.backends.torch.tasks import TextToImage as TextToImageTask

        c = self.config
        self.task = TextToImageTask(
            model_dir,
            steps=c.num_inference_steps,
            guidance_scale=c.guidance_scale,
            size=c.image_size or None,
            dtype=c.dtype,
            device=c.device,
        )
        return {"generate": self.task.generate}

    @property
    def image_size(self) -> int:
        """Pixels per side of the images this model makes."""
        return self.task.size

    async def text_to_image(self, text: str, extra: Mapping[str, Any]) -> list[GeneratedImage]:
        from sax.backends.torch.tasks import GenerateItem

        opts = vision_extra(
            extra,
            {
                "num_samples": ExtraKey(int, 1, 1, self.config.max_samples),
                "seed": ExtraKey(int, 0, 0, 2**31 - 1),
            },
        )
        item = GenerateItem(text, opts["num_samples"], opts["seed"])
        images = await self.run("generate", item)
        encoded = await asyncio.to_thread(lambda: [encode_png(im) for im in images])
        return [GeneratedImage(image=data, score=0.0) for data in encoded]


def prepare_process() -> None:
    """Imports torch, transformers and diffusers on the calling (main) thread, before any loader
    thread does: their first imports are not safe to run concurrently."""
    from diffusers import DiffusionPipeline  # noqa: F401
    from transformers import AutoModel  # noqa: F401

    from sax.backends.torch import tasks  # noqa: F401
