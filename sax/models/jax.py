"""Servables on the native JAX engine (`sax.backends.jax`): what ``model_path`` names.

- `Tiny`: a tiny random-weight Llama with a trained BPE tokenizer (`assets.tiny_llama_dir`),
  for tests and benchmarks.
- `SmolLM2_135M`: the real SmolLM2-135M-Instruct (`assets.smollm2_dir`).

Checkpoint ``None`` serves the class's built-in weights (Tiny's are random); the override
``random_init=true`` draws random weights of the same architecture instead. A published
checkpoint (a local directory or any fsspec URL such as ``gs://``) in Hugging Face layout
supplies config.json and safetensors, read directly through fsspec; its tokenizer is used when
it is a local directory that has one, the built-in one otherwise.

Methods: lm.generate, lm.generate_stream, lm.score, lm.embed and lm.gradient. ``lm.embed`` is the
mean of the final (normed) hidden states over the text's tokens, L2-normalized: a decoder has no
trained pooling head, and mean pooling is the usual stand-in. ``lm.gradient`` returns the suffix
score and its gradient with respect to the input embeddings of every prefix and suffix token.

A load compiles every prefill and decode shape bucket before the replica reports LOADED (one
log line per ~10 s of progress), so the first request is as fast as a warm one. That costs
seconds per bucket on a CPU (SmolLM2's defaults have 81 buckets); the executables persist in
the model cache, so a later load on the same host reads them back, and ``precompile=false``
defers each bucket to its first request instead.

The topology override (e.g. ``"2x2"``) is a placement key that `Servable.parse_config` keeps
away from `Config`; this module reads it back so the engine spans that many devices.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from sax.backends.jax import compile_cache
from sax.backends.jax.config import ModelConfig
from sax.backends.jax.engine import Engine, EngineConfig
from sax.backends.jax.mesh import topology_size
from sax.backends.jax.weights import load_params, random_params
from sax.errors import invalid, unavailable
from sax.generation import Sample, SamplingOptions, StreamItem
from sax.models import assets
from sax.schemas import GradientResponse, Tensor
from sax.server.registry import register
from sax.server.servable import SamplingConfig, Servable, ServableConfig

log = logging.getLogger(__name__)


def prepare_process() -> None:
    """Imports what a JAX load uses, on the calling (main) thread, before any load runs: first
    imports of transformers racing in loader threads leave half-initialised modules behind."""
    import importlib
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for name in (
        "jax",
        "jax.numpy",
        "safetensors",
        "transformers",
        "transformers.models.auto.tokenization_auto",
    ):
        importlib.import_module(name)


BUILD_CANCEL_WAIT_S = 120.0  # a cancelled build finishes its current step within this
WARM_UP = SamplingOptions(max_decode_steps=2)
PROGRESS_LOG_S = 10.0  # at most one compile-progress log line per this many seconds

_DTYPES = {"float32": (np.float32, 4), "bfloat16": (ml_dtypes.bfloat16, 2)}


class JaxLMConfig(SamplingConfig):
    """Overridable settings: engine sizing, weights, default sampling."""

    topology: str = "1"
    num_slots: int = 8
    max_seq_len: int = 256
    max_prefill_batch: int = 4
    dtype: str = "float32"
    random_init: bool = False
    seed: int = 0
    # Compile every generate bucket while loading (see `JaxLM._precompile`); false loads
    # sooner and compiles each bucket on the first request that needs it.
    precompile: bool = True


class JaxLM(Servable):
    """A Llama-family decoder on one `Engine`; subclasses name their built-in model directory."""

    backend: ClassVar[str] = "jax"
    methods: ClassVar[frozenset[str]] = frozenset(
        {"lm.generate", "lm.generate_stream", "lm.score", "lm.embed", "lm.gradient"}
    )
    Config: ClassVar[type[ServableConfig]] = JaxLMConfig
    approx_params: ClassVar[int] = 0
    kv_bytes_per_token: ClassVar[int] = 0  # float32
    config: JaxLMConfig

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.engine: Engine | None = None
        self.tokenizer: Any = None

    @abc.abstractmethod
    def default_model_dir(self) -> Path:
        """The model directory (config, weights, tokenizer) served for checkpoint None."""

    @classmethod
    def parse_config(cls, overrides: Mapping[str, Any]) -> ServableConfig:
        config = super().parse_config(overrides)
        topology = overrides.get("topology")
        if topology is None:
            return config
        if not isinstance(topology, str):
            raise invalid(f"override 'topology' must be a string like '2x2', got {topology!r}")
        try:
            topology_size(topology)
        except ValueError as exc:
            raise invalid(f"override 'topology': {exc}") from exc
        return config.model_copy(update={"topology": topology})

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        cfg = config if isinstance(config, JaxLMConfig) else cls.Config()
        assert isinstance(cfg, JaxLMConfig)
        width = _DTYPES.get(cfg.dtype, (None, 4))[1]
        weights = cls.approx_params * width
        cache = cls.kv_bytes_per_token * width // 4 * cfg.num_slots * cfg.max_seq_len
        return int((weights + cache) * 1.1) + (64 << 20)

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        if self.config.dtype not in _DTYPES:
            raise invalid(f"override 'dtype' must be one of {sorted(_DTYPES)}")
        cancelled = threading.Event()
        built: list[Engine] = []
        building = asyncio.ensure_future(asyncio.to_thread(self._build, cancelled, built))
        try:
            await asyncio.shield(building)
        except asyncio.CancelledError:
            # An unload or a load timeout mid-build: the thread stops at its next step, and an
            # engine it already started is stopped, so no thread or weights outlive the load.
            cancelled.set()
            await asyncio.wait([building], timeout=BUILD_CANCEL_WAIT_S)
            for engine in built:
                await asyncio.to_thread(engine.stop)
            raise
        self.engine = built.pop()
        if self.config.precompile:
            # One short request through the whole serving path (queues, detokenizer, stream
            # items) pays the first-call costs that compiling cannot.
            prompt = self._prefix_ids("")
            await self.engine.submit(prompt, WARM_UP, ignore_eos=True).result()

    def health(self) -> str | None:
        engine = self.engine
        return engine.dead_reason() if engine is not None else None

    def _build(self, cancelled: threading.Event, built: list[Engine]) -> None:
        from transformers import AutoTokenizer

        def check() -> None:
            if cancelled.is_set():
                raise RuntimeError("load cancelled")

        compile_cache.enable(assets.cache_root() / "jax-compile")
        base = self.default_model_dir()
        source = str(base) if self.spec.random_weights else self.spec.checkpoint_path
        cfg = ModelConfig.load(source)
        check()
        if self.config.random_init:
            params = random_params(cfg, seed=self.config.seed)
        else:
            params = load_params(source, cfg)
        check()
        dtype = _DTYPES[self.config.dtype][0]
        params = _cast(params, dtype)
        tok_dir = base
        if not self.spec.random_weights and "://" not in source:
            if (Path(source) / "tokenizer_config.json").exists():
                tok_dir = Path(source)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        backend = self.tokenizer.backend_tokenizer

        def decode(ids: Sequence[int]) -> str:
            return str(backend.decode(list(ids), skip_special_tokens=True))

        c = self.config
        engine = Engine(
            cfg,
            params,
            decode,
            EngineConfig(
                num_slots=c.num_slots,
                max_seq_len=c.max_seq_len,
                max_prefill_batch=c.max_prefill_batch,
                topology=c.topology
                if "topology" in self.spec.overrides
                else self.spec.platform_topology,
            ),
            eos_ids=self._eos_ids(cfg),
        )
        check()
        if c.precompile:
            self._precompile(engine, check)
        engine.start()
        built.append(engine)

    def _precompile(self, engine: Engine, check: Callable[[], None]) -> None:
        """Compiles every generate bucket before the replica reports LOADED, so the first
        request runs as fast as a warm one; `check` between buckets keeps the load cancellable.
        Compiled executables persist under the model cache (`compile_cache`), so a later load
        of the same model and settings on this host reads them back instead."""
        model_id = self.spec.model_id
        workers = min(4, os.cpu_count() or 1)
        start = last = time.monotonic()
        buckets = len(engine.generation_buckets())
        log.info("%s: compiling %d shape buckets on %d threads", model_id, buckets, workers)
        with contextlib.closing(engine.precompile(workers)) as progress:
            for done, total in progress:
                check()
                now = time.monotonic()
                if now - last >= PROGRESS_LOG_S and done < total:
                    log.info("%s: %d/%d compile and warm-up steps", model_id, done, total)
                    last = now
        log.info(
            "%s: compiled %d shape buckets in %.1f s", model_id, buckets, time.monotonic() - start
        )

    def _eos_ids(self, cfg: ModelConfig) -> list[int]:
        ids = set(cfg.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return sorted(ids)

    async def unload(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.stop)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise unavailable(f"{self.spec.model_id} is not loaded")
        return self.engine

    # ------------------------------------------------------------ tokens

    def _prefix_ids(self, text: str) -> list[int]:
        """The tokenizer's ids (with its special tokens); never empty, so the first generated
        or scored token always conditions on something: BOS (or EOS) stands in for ``''``."""
        ids = list(self.tokenizer(text).input_ids)
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        return [int(start if start is not None else self.tokenizer.eos_token_id)]

    def _suffix_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return super().count_tokens(text)
        return len(self._suffix_ids(text))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        return super().chat_prompt(messages)

    # ------------------------------------------------------------ data methods

    async def generate(self, text: str, options: SamplingOptions) -> list[Sample]:
        """Samples sorted by descending score, as Saxml's decoder returns them."""
        handle = self._engine().submit(self._prefix_ids(text), options)
        try:
            samples = await handle.result()
        finally:
            handle.cancel()
        return sorted(samples, key=lambda s: -s.score)

    async def generate_stream(
        self, text: str, options: SamplingOptions
    ) -> AsyncIterator[list[StreamItem]]:
        handle = self._engine().submit(self._prefix_ids(text), options)
        try:
            async for items in handle.stream():
                yield items
        finally:
            handle.cancel()

    async def score(
        self, prefix: str, suffixes: list[str], extra: Mapping[str, Any]
    ) -> list[float]:
        _reject_extra(extra)
        head = self._prefix_ids(prefix)
        return await self._engine().score([(head, self._suffix_ids(s)) for s in suffixes])

    async def embed(self, text: str, extra: Mapping[str, Any]) -> list[float]:
        _reject_extra(extra)
        return await self._engine().embed(self._prefix_ids(text))

    async def gradient(
        self, prefix: str, suffix: str, extra: Mapping[str, Any]
    ) -> GradientResponse:
        _reject_extra(extra)
        score, grad = await self._engine().gradient(
            self._prefix_ids(prefix), self._suffix_ids(suffix)
        )
        tensor = Tensor(shape=list(grad.shape), values=grad.reshape(-1).tolist())
        return GradientResponse(score=[score], gradients={"input_embeddings": tensor})


def _reject_extra(extra: Mapping[str, Any]) -> None:
    """score/embed/gradient take no extra inputs; a key here is a caller's mistake."""
    if extra:
        raise invalid(
            f"unknown extra input(s) {', '.join(sorted(map(repr, extra)))}; none accepted"
        )


def _cast(params: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Every array of the parameter pytree (dicts and per-layer lists) as numpy `dtype`."""
    import jax

    cast: dict[str, Any] = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(dtype), params)
    return cast


# ---------------------------------------------------------------- registered models


class TinyConfig(JaxLMConfig):
    num_slots: int = 8
    max_seq_len: int = 128


@register("sax.models.jax.Tiny")
class Tiny(JaxLM):
    """A tiny random-weight Llama (2 layers, hidden 128, GQA 4/2) with a real BPE tokenizer."""

    Config: ClassVar[type[ServableConfig]] = TinyConfig
    approx_params = 426_624
    kv_bytes_per_token = 2 * 2 * 2 * 32 * 4

    def default_model_dir(self) -> Path:
        return assets.tiny_llama_dir(seed=0)


class SmolLM2Config(JaxLMConfig):
    num_slots: int = 32
    max_seq_len: int = 1024
    max_decode_steps: int = 128


@register("sax.models.jax.SmolLM2_135M")
class SmolLM2_135M(JaxLM):
    """SmolLM2-135M-Instruct: real weights and chat template (30 layers, GQA 9/3, tied)."""

    Config: ClassVar[type[ServableConfig]] = SmolLM2Config
    approx_params = 134_515_008
    kv_bytes_per_token = 2 * 30 * 3 * 64 * 4

    def default_model_dir(self) -> Path:
        return assets.smollm2_dir()
