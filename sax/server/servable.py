"""The servable interface every engine adapter implements.

A servable class is what a published model's ``model_path`` names. The model server creates one
instance per loaded model with a `LoadSpec`, calls `load()` in the background, serves data methods
while it is LOADED, and calls `unload()` to free memory. Data methods are async; engine work never
runs on the server's event loop (the engine's own loop, a thread, or a subprocess).

Cancellation is the abort signal: when a client disconnects the server cancels the task awaiting
`generate`/`score`/... or closes the `generate_stream` iterator, and the servable must abort the
engine request then (``try/finally`` around the engine call).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import Metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sax.errors import Code, SaxError, invalid
from sax.generation import Sample, SamplingOptions, StreamItem
from sax.schemas import GradientResponse
from sax.server.sampling import BASIC_FIELDS, apply_options, sampling_from_extra

# Override keys that steer placement on the admin; servables never see them.
PLACEMENT_KEYS = frozenset({"ram", "constraints", "chip", "topology"})


def is_placement_key(key: str) -> bool:
    return key in PLACEMENT_KEYS or (key.startswith("ram") and key[3:].isdigit())


class ServableConfig(BaseModel):
    """Per-class settings that overrides may change; unknown keys and wrong types are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # A load still running after this long is cancelled (what it built is freed) and the model
    # is FAILED "load timed out after N s"; generous, because a first load may convert weights.
    load_timeout_s: float = Field(default=900.0, gt=0, allow_inf_nan=False)


class SamplingConfig(ServableConfig):
    """Default sampling a publisher may override; each request's extra inputs override these."""

    temperature: float = 0.0
    max_decode_steps: int = 64
    top_k: int = 0
    top_p: float = 1.0


@dataclass(frozen=True)
class LoadSpec:
    model_id: str
    model_path: str
    checkpoint_path: str  # "None" means random weights of the declared architecture
    overrides: Mapping[str, Any] = field(default_factory=dict)
    acls: Mapping[str, str] = field(default_factory=dict)
    uuid: str = ""
    platform_chip: str = "cpu"  # the model server's own platform, for engines that shard
    platform_topology: str = "1"

    @property
    def random_weights(self) -> bool:
        return self.checkpoint_path in ("None", "", "none")


class Servable(abc.ABC):
    """Base class. Subclasses set the ClassVars and override the methods they serve."""

    backend: ClassVar[str] = "test"
    methods: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type[ServableConfig]] = ServableConfig
    default_sampling: ClassVar[SamplingOptions] = SamplingOptions()
    # The `SamplingOptions` fields the engine honours; others are refused by name.
    sampling_fields: ClassVar[frozenset[str]] = BASIC_FIELDS

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.config = self.parse_config(spec.overrides)

    @classmethod
    def parse_config(cls, overrides: Mapping[str, Any]) -> ServableConfig:
        """Applies overrides to `Config` with strict types; INVALID_ARGUMENT names the bad key."""
        values = {k: v for k, v in overrides.items() if not is_placement_key(k)}
        try:
            return cls.Config(**values)
        except ValidationError as exc:
            errs = "; ".join(
                f"override {'.'.join(str(p) for p in e['loc'])!r}: {e['msg']}" for e in exc.errors()
            )
            raise invalid(errs) from exc

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        """Estimated memory one loaded replica needs (weights + cache); 0 if negligible."""
        return 0

    @abc.abstractmethod
    async def load(self) -> None:
        """Builds or fetches weights and starts the engine; raises with a clear reason on failure."""

    @abc.abstractmethod
    async def unload(self) -> None:
        """Stops the engine and frees its memory."""

    def engine_pids(self) -> list[int]:
        """Process ids of the engine's own processes (none for in-process engines)."""
        return []

    def health(self) -> str | None:
        """Why the loaded engine can no longer serve (its process exited, its thread ended), or
        None while it is healthy. The model server polls it about twice a second and moves a
        model whose engine died to FAILED with this reason."""
        return None

    def engine_metrics(self) -> list[Metric]:
        """The engine's own Prometheus metric families (vLLM's time to first token, queue time,
        KV-cache usage, prefix-cache hits...), which ``/metrics`` serves labelled with the model;
        empty for engines without any."""
        return []

    def sampling_defaults(self) -> SamplingOptions:
        """The config's defaults (a `SamplingConfig`), else the class's `default_sampling`."""
        c = self.config
        if isinstance(c, SamplingConfig):
            return SamplingOptions(
                temperature=c.temperature,
                max_decode_steps=c.max_decode_steps,
                top_k=c.top_k,
                top_p=c.top_p,
            )
        return self.default_sampling

    def sampling(self, extra: Mapping[str, Any]) -> SamplingOptions:
        """Request options: Saxml `extra` inputs over `sampling_defaults`; INVALID_ARGUMENT
        names ``extra_inputs.<key>`` for an unknown key, a bad value, or an option this
        servable does not honour."""
        return sampling_from_extra(extra, self.sampling_defaults(), self.sampling_fields)

    def options(self, values: Mapping[str, tuple[Any, str]]) -> SamplingOptions:
        """Request options from named fields (SamplingOptions field -> (value, public name)),
        as the OpenAI routes give them; errors name the public field."""
        return apply_options(values, self.sampling_defaults(), self.sampling_fields)

    async def generate(self, text: str, options: SamplingOptions) -> list[Sample]:
        raise self._unimplemented("lm.generate")

    def generate_stream(
        self, text: str, options: SamplingOptions
    ) -> AsyncIterator[list[StreamItem]]:
        """Yields, per step, the items of the samples that changed."""
        raise self._unimplemented("lm.generate_stream")

    async def score(
        self, prefix: str, suffixes: list[str], extra: Mapping[str, Any]
    ) -> list[float]:
        raise self._unimplemented("lm.score")

    async def embed(self, text: str, extra: Mapping[str, Any]) -> list[float]:
        raise self._unimplemented("lm.embed")

    async def gradient(
        self, prefix: str, suffix: str, extra: Mapping[str, Any]
    ) -> GradientResponse:
        raise self._unimplemented("lm.gradient")

    def lm_prompt(self, text: str) -> str:
        """What the Saxml lm.generate methods send to the engine for `text`.

        Instruct servables whose config sets ``chat=True`` wrap the text as one user turn in the
        tokenizer's chat template, so ``saxutil lm.generate /sax/c/m "question"`` gets an answer
        rather than a continuation. lm.score and OpenAI ``/v1/completions`` always see raw text.
        """
        if getattr(self.config, "chat", False):
            return self.chat_prompt([{"role": "user", "content": text}])
        return text

    def token_prompt(self, token_ids: list[int]) -> str:
        """A prompt given as token ids (OpenAI completions); INVALID_ARGUMENT naming ``prompt``
        for servables that take text only."""
        raise invalid(f"{self.spec.model_path} takes text prompts only, not token ids", "prompt")

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Renders chat messages into a prompt (the tokenizer's chat template where it has one)."""
        lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _unimplemented(self, method: str) -> SaxError:
        return SaxError(Code.UNIMPLEMENTED, f"{self.spec.model_path} does not serve {method}")
