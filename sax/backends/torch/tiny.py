"""Tiny random-weight vision model directories, built in-process and cached (`assets.cached_dir`).

They have the architectures of the real models (ViT classifier, CLIP, DETR with a ResNet
backbone, a Stable Diffusion pipeline) at a few hundred thousand parameters, saved in Hugging
Face layout, so servables load them exactly as they load a published checkpoint. Their answers
are deterministic for a seed and meaningless: they exist for tests and benchmarks. Building one
takes about a second; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sax.models.assets import cached_dir

_VERSION = 1
IMAGE_SIZE = 32  # pixels per side the tiny classifier and CLIP see
DETR_SIZE = 64  # the tiny detector's input side
TINY_LABELS = tuple(f"label_{i}" for i in range(10))
_MEAN, _STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]

_CAPTIONS = """\
a photo of a cat. a photo of a dog. a red square on a white background. a blue circle.
a green triangle. an astronaut on the moon. a cup of coffee on a table. a rocket launch.
a painting of a mountain lake at sunset. two birds on a branch. a city street at night.
"""


def caption_tokenizer(max_length: int = 16) -> Any:
    """A small byte-level BPE tokenizer (``<s> text </s>``, pad ``<pad>``) trained on captions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CAPTIONS.splitlines() * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _vit_processor(size: int) -> Any:
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=_MEAN, image_std=_STD)


def _label_maps(labels: tuple[str, ...]) -> dict[str, Any]:
    """A transformers config's ``id2label`` and ``label2id`` for `labels`."""
    return {
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def build_classifier(out: Path, seed: int = 0, labels: tuple[str, ...] = TINY_LABELS) -> Any:
    """A ViT image classifier over `labels` (32x32 input, 2 layers, hidden 32); returns it."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_label_maps(labels),
    )
    model = ViTForImageClassification(config)
    model.save_pretrained(out, safe_serialization=True)
    _vit_processor(IMAGE_SIZE).save_pretrained(out)
    return model


def _clip_config(vocab_size: int, tokenizer: Any) -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=32,
    )


def build_clip(out: Path, seed: int = 0) -> Any:
    """A CLIP model (ViT and text towers of 2 layers, 32-d shared space) with its tokenizer."""
    import torch
    from transformers import CLIPModel

    torch.manual_seed(seed)
    tokenizer = caption_tokenizer()
    model = CLIPModel(_clip_config(len(tokenizer), tokenizer))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _vit_processor(IMAGE_SIZE).save_pretrained(out)
    return model


def build_detector(out: Path, seed: int = 0, labels: tuple[str, ...] = TINY_LABELS) -> Any:
    """DETR with a small transformers-native ResNet backbone (no timm), 10 queries, 64x64 input."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    torch.manual_seed(seed)
    backbone = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone=None,
        backbone_config=backbone,
        num_queries=10,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        **_label_maps(labels),
    )
    model = DetrForObjectDetection(config)
    model.save_pretrained(out, safe_serialization=True)
    DetrImageProcessor(
        size={"shortest_edge": DETR_SIZE, "longest_edge": DETR_SIZE}
    ).save_pretrained(out)
    return model


def build_text_to_image(out: Path, seed: int = 0) -> Any:
    """A Stable Diffusion pipeline: UNet (32/64 channels), a 2-block VAE, a CLIP text encoder,
    DDIM; 32x32 images."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = caption_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    return pipeline


def classifier_dir(seed: int = 0) -> Path:
    return cached_dir(f"tiny-vit-v{_VERSION}-seed{seed}", lambda d: build_classifier(d, seed))


def clip_dir(seed: int = 0) -> Path:
    return cached_dir(f"tiny-clip-v{_VERSION}-seed{seed}", lambda d: build_clip(d, seed))


def detector_dir(seed: int = 0) -> Path:
    return cached_dir(f"tiny-detr-v{_VERSION}-seed{seed}", lambda d: build_detector(d, seed))


def text_to_image_dir(seed: int = 0) -> Path:
    return cached_dir(f"tiny-sd-v{_VERSION}-seed{seed}", lambda d: build_text_to_image(d, seed))
