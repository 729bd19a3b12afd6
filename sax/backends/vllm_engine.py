"""One vLLM `AsyncLLM` per loaded model, behind the small interface sax servables need.

Why the async engine: it does continuous batching across every in-flight request, takes
sampling parameters per request, streams per-token deltas, and aborts a request the moment its
consumer goes away. The original Saxml servable drove the offline `LLM` one prompt at a time with
fixed sampling and scored 0.0; here each request is a separate engine request, so concurrent
requests share decode steps.

Contracts:
- `VllmEngine.start` builds the engine in a worker thread (engine-core start-up takes 15-30 s on
  CPU), so the caller's event loop keeps serving other models meanwhile.
- Every request path wraps the engine call in ``try/finally`` and aborts the engine request when
  the consumer stops early or the task is cancelled; `num_unfinished` then drops back to 0.
- Scores are real log-probabilities: generation asks for ``logprobs=0`` so vLLM tracks the
  cumulative log-prob of the sampled tokens (raw model distribution, before temperature), and
  `score` sums prompt log-probs over the suffix tokens.
- `shutdown` stops the engine-core process and frees its memory; it is idempotent.

Settings: `EngineSettings` (from the servable's config) plus the environment:
``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the KV cache on CPU when the config leaves it unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sax.errors import Code, SaxError, invalid, unavailable
from sax.schemas import Sample, StreamItem
from sax.server.sampling import SamplingOptions

_GIB = 1 << 30
DEFAULT_CPU_KV_CACHE_GIB = 1.0


@dataclass(frozen=True)
class EngineSettings:
    """How to start one engine; servables fill it from their (overridable) config."""

    model: str  # a local Hugging Face model directory
    runner: str = "generate"  # "generate" or "pooling" (embeddings)
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 256
    kv_cache_gib: float | None = None  # None: $VLLM_CPU_KVCACHE_SPACE on CPU, else GPU fraction
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # None: True on CPU (start-up ~30 s instead of minutes)
    load_format: str = "auto"  # "dummy" = random weights of the declared architecture
    seed: int = 0
    hf_overrides: dict[str, Any] = field(default_factory=dict)


class _PeakStats:
    """A vLLM stat logger that keeps the scheduler's running/waiting counts and their peak.

    Why: it is the engine's own evidence of continuous batching (``peak_running > 1``), and the
    model server can export it. It is created inside `AsyncLLM` (one per engine core).
    """

    def __init__(self, vllm_config: Any = None, engine_index: int = 0) -> None:
        self.running = 0
        self.waiting = 0
        self.peak_running = 0
        self.kv_cache_usage = 0.0

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if scheduler_stats is None:
            return
        self.running = scheduler_stats.num_running_reqs
        self.waiting = scheduler_stats.num_waiting_reqs
        self.kv_cache_usage = scheduler_stats.kv_cache_usage
        self.peak_running = max(self.peak_running, self.running)

    def log_engine_initialized(self) -> None:
        return None

    def log(self) -> None:
        return None

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        return None


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _engine_args(settings: EngineSettings) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    cpu = _is_cpu()
    kv_gib = settings.kv_cache_gib
    if kv_gib is None and cpu:
        kv_gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB)
    enforce_eager = settings.enforce_eager if settings.enforce_eager is not None else cpu
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "tokenizer": settings.model,
        "runner": settings.runner,
        "dtype": settings.dtype,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enforce_eager": enforce_eager,
        "load_format": settings.load_format,
        "seed": settings.seed,
        "disable_log_stats": True,  # our own `_PeakStats` logger still records
        "enable_log_requests": False,
        "skip_tokenizer_init": False,
    }
    if settings.hf_overrides:
        kwargs["hf_overrides"] = dict(settings.hf_overrides)
    if kv_gib is not None:
        # An explicit KV size also skips the CPU warm-up pass that sizes the cache from free RSS.
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * _GIB)
    else:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs)


def sampling_params(options: SamplingOptions, *, ignore_eos: bool = False, stream: bool) -> Any:
    """Saxml sampling options -> vLLM `SamplingParams` (one per request, never per model)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(
        n=options.num_samples,
        temperature=options.temperature,
        top_k=options.top_k if options.top_k > 0 else 0,
        top_p=options.top_p,
        max_tokens=options.max_decode_steps,
        seed=options.seed,
        stop=list(options.stop) or None,
        logprobs=0,  # makes vLLM track cumulative_logprob of the sampled tokens
        ignore_eos=ignore_eos,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )


class VllmEngine:
    """A started `AsyncLLM` with sax's request methods. Create with `await VllmEngine.start(...)`."""

    _ids = itertools.count()

    def __init__(self, engine: Any, settings: EngineSettings, stats: _PeakStats) -> None:
        self._engine = engine
        self.settings = settings
        self.stats = stats
        self.tokenizer: Any = engine.tokenizer
        self._closed = False

    @classmethod
    async def start(cls, settings: EngineSettings) -> VllmEngine:
        """Starts the engine core off the event loop; raises with vLLM's reason on failure."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        holder: list[_PeakStats] = []

        def stats_factory(vllm_config: Any, engine_index: int = 0) -> _PeakStats:
            holder.append(_PeakStats(vllm_config, engine_index))
            return holder[-1]

        built: list[Any] = []

        def build() -> None:
            from vllm.v1.engine.async_llm import AsyncLLM

            built.append(
                AsyncLLM.from_engine_args(_engine_args(settings), stat_loggers=[stats_factory])
            )

        # The engine goes through `built`, not the thread's return value: the finished futures
        # of `to_thread` can outlive the call and would keep a shut-down engine referenced.
        starting = asyncio.ensure_future(asyncio.to_thread(build))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # An unload while loading: the thread cannot be interrupted, so let it finish and
            # stop what it started; otherwise its engine processes would be orphaned.
            with contextlib.suppress(Exception):
                await starting
            if built:
                engine = built.pop()
                await asyncio.to_thread(_stop, engine, _process_tree(cls.engine_pids_of(engine)))
            raise
        engine = built.pop()
        return cls(engine, settings, holder[0] if holder else _PeakStats())

    # ------------------------------------------------------------ introspection

    @property
    def num_unfinished(self) -> int:
        """Requests the engine still tracks (running or waiting); 0 when idle."""
        return 0 if self._closed else int(self._engine.get_num_unfinished_requests())

    @property
    def engine_pids(self) -> list[int]:
        """Process ids of the engine-core processes (gone after `shutdown`)."""
        return [] if self._closed else self.engine_pids_of(self._engine)

    @staticmethod
    def engine_pids_of(engine: Any) -> list[int]:
        resources = getattr(engine.engine_core, "resources", None)
        manager = getattr(resources, "engine_manager", None)
        procs = getattr(manager, "processes", None) or []
        return [p.pid for p in procs if p.pid is not None]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _check_open(self) -> None:
        if self._closed:
            raise unavailable("the model's engine is shut down")

    def _prompt(self, text: str) -> dict[str, Any]:
        """The prompt as token ids (tokenized here, with the tokenizer's special tokens)."""
        return {"prompt_token_ids": list(self.tokenizer(text).input_ids)}

    async def _run(self, kind: str, prompt: Any, params: Any) -> AsyncGenerator[Any, None]:
        """Outputs of one engine request, with vLLM's errors mapped to sax codes.

        The ``finally`` aborts the engine request unless it finished: the consumer stopped early
        (closed this generator) or its task was cancelled (a client disconnected, a deadline).
        """
        from vllm.exceptions import GracefulHTTPError, VLLMClientError
        from vllm.pooling_params import PoolingParams
        from vllm.v1.engine.exceptions import EngineDeadError

        self._check_open()
        request_id = f"sax-{kind}-{next(self._ids)}"
        stream = (
            self._engine.encode(prompt, params, request_id)
            if isinstance(params, PoolingParams)
            else self._engine.generate(prompt, params, request_id)
        )
        finished = False
        try:
            async for out in stream:
                finished = bool(out.finished)
                yield out
        except (VLLMClientError, ValueError) as exc:
            raise invalid(str(exc)) from exc
        except GracefulHTTPError as exc:
            code = Code.RESOURCE_EXHAUSTED if exc.http_status == 429 else Code.UNAVAILABLE
            raise SaxError(code, exc.message) from exc
        except EngineDeadError as exc:
            reason = "the model was unloaded" if self._closed else f"the engine died: {exc}"
            raise unavailable(reason) from exc
        finally:
            await stream.aclose()
            if not finished:
                await self._abort(request_id)

    # ------------------------------------------------------------ generation

    async def generate(
        self, prompt: str, options: SamplingOptions, *, ignore_eos: bool = False
    ) -> list[Sample]:
        """All samples of one prompt, once they finish (one engine request with ``n`` samples)."""
        params = sampling_params(options, ignore_eos=ignore_eos, stream=False)
        final = None
        async with contextlib.aclosing(self._run("gen", self._prompt(prompt), params)) as results:
            async for out in results:
                final = out
        if final is None:
            raise SaxError(Code.INTERNAL, "the engine returned no output")
        outputs = sorted(final.outputs, key=lambda o: o.index)
        return [
            Sample(
                text=o.text,
                score=_finite(o.cumulative_logprob),
                num_tokens=len(o.token_ids),
                finish_reason=o.finish_reason or "stop",
            )
            for o in outputs
        ]

    async def generate_stream(
        self, prompt: str, options: SamplingOptions, *, ignore_eos: bool = False
    ) -> AsyncGenerator[list[StreamItem], None]:
        """Per engine step, the samples that produced text: delta, emitted length, score so far.

        ``prefix_len`` is the number of characters already sent for that sample, so a client
        rebuilds each sample as ``acc[:prefix_len] + text``.
        """
        params = sampling_params(options, ignore_eos=ignore_eos, stream=True)
        emitted = [0] * options.num_samples
        generated = [0] * options.num_samples
        async with contextlib.aclosing(
            self._run("stream", self._prompt(prompt), params)
        ) as results:
            async for out in results:
                items = []
                for o in out.outputs:
                    generated[o.index] += len(o.token_ids)
                    # One item per decode step, even when the detokenizer holds back an
                    # incomplete character (empty text): the score still moved.
                    items.append(
                        StreamItem(
                            index=o.index,
                            text=o.text,
                            prefix_len=emitted[o.index],
                            score=_finite(o.cumulative_logprob),
                            num_tokens=generated[o.index],
                        )
                    )
                    emitted[o.index] += len(o.text)
                if items:
                    yield items

    # ------------------------------------------------------------ scoring

    def _score_prompt(self, prefix: str, suffix: str) -> tuple[list[int], int]:
        """Token ids of prefix+suffix and the index of the first suffix token.

        Tokenizes the prefix and the joined text and scores the tokens after their common
        prefix, so a token the tokenizer merges across the boundary counts as suffix. An empty
        tokenized prefix gets the BOS (or EOS) token so the first suffix token is conditioned on
        something and has a log-prob.
        """
        prefix_ids = list(self.tokenizer(prefix).input_ids) if prefix else []
        full_ids = list(self.tokenizer(prefix + suffix).input_ids)
        start = 0
        for a, b in zip(prefix_ids, full_ids, strict=False):
            if a != b:
                break
            start += 1
        if start == 0:
            anchor = self.tokenizer.bos_token_id
            if anchor is None:
                anchor = self.tokenizer.eos_token_id
            full_ids = [anchor, *full_ids]
            start = 1
        return full_ids, start

    async def _score_one(self, prefix: str, suffix: str) -> float:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        ids, start = self._score_prompt(prefix, suffix)
        if start >= len(ids):
            return 0.0  # an empty suffix has probability 1
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        async with contextlib.aclosing(
            self._run("score", {"prompt_token_ids": ids}, params)
        ) as results:
            async for out in results:
                final = out
        if final is None or final.prompt_logprobs is None:
            raise SaxError(Code.INTERNAL, "the engine returned no prompt log-probs")
        total = 0.0
        for pos in range(start, len(ids)):
            entry = final.prompt_logprobs[pos]
            total += entry[ids[pos]].logprob
        return _finite(total)

    async def score(self, prefix: str, suffixes: Sequence[str]) -> list[float]:
        """log P(suffix | prefix) per suffix; the suffixes run as concurrent engine requests."""
        self._check_open()
        return list(await asyncio.gather(*(self._score_one(prefix, s) for s in suffixes)))

    # ------------------------------------------------------------ embeddings

    async def embed(self, text: str) -> list[float]:
        """The pooled sentence embedding (the model's own pooling and normalization)."""
        from vllm.pooling_params import PoolingParams

        final = None
        async with contextlib.aclosing(
            self._run("embed", self._prompt(text), PoolingParams(task="embed"))
        ) as results:
            async for out in results:
                final = out
        if final is None:
            raise SaxError(Code.INTERNAL, "the engine returned no embedding")
        data = final.outputs.data
        return [float(x) for x in data.flatten().tolist()]

    # ------------------------------------------------------------ lifecycle

    async def _abort(self, request_id: str) -> None:
        if not self._closed:
            await self._engine.abort(request_id)

    async def shutdown(self) -> None:
        """Stops the engine core (its process and threads) and drops the engine; idempotent."""
        if self._closed:
            return
        self._closed = True
        from vllm.v1.engine.exceptions import EngineDeadError

        engine, self._engine = self._engine, None
        # Fail requests still in flight (UNAVAILABLE) rather than leave them waiting forever on a
        # stopped engine, and stop the output handler before the core goes away so it does not
        # log the core's exit as a crash.
        engine.output_processor.propagate_error(EngineDeadError())
        handler = engine.output_handler
        if handler is not None:
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        procs = _process_tree(self.engine_pids_of(engine))
        await asyncio.to_thread(_stop, engine, procs)
        del engine


def _process_tree(pids: Sequence[int]) -> list[Any]:
    import psutil

    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return procs


def _stop(engine: Any, procs: list[Any]) -> None:
    """Shuts the engine down and waits until its processes (core and workers) have exited, so
    their memory is free when `unload` returns; stragglers are killed after a grace period."""
    import psutil

    engine.shutdown()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _finite(value: float | None) -> float:
    """Log-probs as JSON-safe floats: None (not requested) -> 0.0, -inf -> a large negative."""
    if value is None:
        return 0.0
    return value if math.isfinite(value) else -1e30
