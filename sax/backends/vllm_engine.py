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
``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the KV cache on CPU when the config leaves it unset;
``SAX_VLLM_ENFORCE_EAGER`` (``1``/``0``) decides eager mode for settings that leave it unset
(unset: vLLM's default, which compiles the model with torch.compile on CPU and captures CUDA
graphs on GPU). Compiled code is cached under the directory `prepare_process` is given, so only
the first load of a model and its settings on a host pays the full compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from sax.backends import require
from sax.backends.vllm_metrics import stat_logger
from sax.batch import run_all
from sax.errors import Code, SaxError, invalid, unavailable
from sax.generation import Sample, SamplingOptions, StreamItem, TokenLogprob, TopLogprob
from sax.prompts import TokenPrompt, text_token_ids

require("vllm")  # imported on first use: `import vllm` takes seconds

_GIB = 1 << 30
# vLLM's validation `parameter` -> the SamplingOptions field it checks.
_PARAM_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "max_tokens": "max_decode_steps",
    "min_tokens": "min_tokens",
    "n": "num_samples",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty",
    "logit_bias": "logit_bias",
    "stop": "stop",
    "stop_token_ids": "stop_token_ids",
    "prompt": "prompt",
    "input_tokens": "prompt",
    "input_text": "prompt",
    "structured_outputs": "json_schema",
    "json": "json_schema",
}
DEFAULT_CPU_KV_CACHE_GIB = 1.0
# Prompts at least this long are tokenised off the event loop (~1 ms of tokenizer time).
THREAD_TOKENIZE_CHARS = 8192
PROMPT_IDS_CACHED = 256
# How long an engine start cancelled mid-way may take to finish before its processes are killed.
START_CANCEL_WAIT_S = 60.0

# Modules whose first import is not thread-safe in practice (transformers and accelerate import
# lazily and circularly; a first import racing in two loader threads leaves half-initialised
# modules in sys.modules for the life of the process). `prepare_process` imports them on the
# main thread before any load runs.
PRELOAD_MODULES = (
    "psutil",
    "torch",
    "accelerate",
    "accelerate.hooks",
    "accelerate.big_modeling",
    "tokenizers",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.llama.modeling_llama",
    "transformers.modeling_gguf_pytorch_utils",
    "gguf",
    "vllm",
    "vllm.engine.arg_utils",
    "vllm.v1.engine.async_llm",
    "vllm.v1.executor",
    "vllm.usage.usage_lib",
    "vllm.v1.engine.exceptions",
    "vllm.sampling_params",
    "vllm.pooling_params",
    "vllm.exceptions",
    "vllm.platforms",
)


def prepare_process(compile_cache: str | os.PathLike[str] | None = None) -> None:
    """Sets the process environment vLLM reads and imports its packages, on the calling thread.

    Call once on the main thread before any load runs: offline flags must be set before
    huggingface_hub reads them, engine-core processes are spawned (forking a process that runs
    threads can deadlock), and `PARENT_PID_ENV` lets each engine core exit when this process
    dies (`sax.backends.vllm_parent_watch`). `compile_cache`, a directory, keeps torch.compile's
    artifacts (inductor's cache and vLLM's own, unless ``TORCHINDUCTOR_CACHE_DIR`` or
    ``VLLM_CACHE_ROOT`` already name one), so a later load on this host reuses them. Raises
    ImportError if vLLM cannot be imported.
    """
    import importlib

    from sax.backends.vllm_parent_watch import PARENT_PID_ENV

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    if compile_cache is not None:
        _use_compile_cache(os.fspath(compile_cache))
    from vllm.platforms import current_platform

    if current_platform.is_cpu():  # resolves the platform once, here
        # vLLM 0.32 cannot reload its ahead-of-time compiled artifacts on CPU ("'function' object
        # has no attribute 'finalize_loading'"), so with AOT on every load compiled from scratch
        # (~75 s for SmolLM2 on 2 cores); the inductor path reuses its cache (~35 s).
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        # The OpenMP runtime is vLLM's own choice: its CPU platform preloads torch's GNU
        # OpenMP (and tcmalloc) for the engine processes, as for `vllm serve`. Intel's runtime
        # measured no faster for sax's engines (bench/RESULTS.md, "The OpenMP runtime").


def _use_compile_cache(directory: str) -> None:
    """Points inductor's and vLLM's caches into `directory`, unless the user named others.
    Engine cores inherit the environment. torch fills in its own default (a per-user temporary
    directory) when it first reads the variable, so that value counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if inductor is None or os.path.abspath(inductor) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(directory, "inductor")
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(directory, "vllm"))


EAGER_ENV = "SAX_VLLM_ENFORCE_EAGER"


def default_enforce_eager(environ: Mapping[str, str] = os.environ) -> bool | None:
    """Eager mode for settings that leave it unset, from ``$SAX_VLLM_ENFORCE_EAGER``:
    ``1``/``true`` eager, ``0``/``false`` compiled, unset or empty None (vLLM's default: compiled).
    Raises ValueError naming the variable for any other value."""
    raw = environ.get(EAGER_ENV, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError(f"{EAGER_ENV}={raw!r}: expected 1 (eager) or 0 (compiled)")


@dataclass(frozen=True)
class EngineSettings:
    """How to start one engine; servables fill it from their (overridable) config."""

    model: str  # a local Hugging Face model directory
    runner: str = "generate"  # "generate" or "pooling" (embeddings)
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None  # None: vLLM's server default on this device (128 on CPU)
    kv_cache_gib: float | None = None  # None: $VLLM_CPU_KVCACHE_SPACE on CPU, else GPU fraction
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    # None: $SAX_VLLM_ENFORCE_EAGER, else vLLM's default (torch.compile on CPU, CUDA graphs on
    # GPU): on CPU compiled runs 1.15-1.2x eager's tokens/s for a longer first load.
    enforce_eager: bool | None = None
    load_format: str = "auto"  # "dummy" = random weights of the declared architecture
    seed: int = 0
    hf_overrides: dict[str, Any] = field(default_factory=dict)
    # The ``model_name`` label on vLLM's metrics (the sax model id); None: the model directory.
    served_model_name: str | None = None
    # vLLM's executor: "uni" (the model runs in the engine-core process), "mp" (a worker process
    # per device) or "auto" (`resolve_executor`: "uni" on a CPU with one worker).
    executor: str = "auto"
    # OpenMP threads of a model in the engine-core process on a CPU; None: `resolve_cpu_threads`.
    cpu_threads: int | None = None


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def resolve_dtype(dtype: str, runner: str, *, cpu: bool, platform_dtypes: Sequence[str]) -> str:
    """The dtype to ask vLLM for: `dtype` itself, except ``auto`` for a pooling model on a CPU.

    vLLM's ``auto`` downcasts a float32 checkpoint to the platform's preferred type
    (`platform_dtypes[0]`, bfloat16 on x86 and Arm CPUs) for generative models, but to float16
    for pooling models whenever the platform lists float16. CPUs without float16 arithmetic (no
    AVX512-FP16) run float16 through conversions: all-MiniLM-L6-v2 took 62 ms per sentence in
    float16 against 14 ms in bfloat16 on a 2-core AVX-512 BF16 CPU. So on a CPU a pooling
    model's ``auto`` follows the generative rule. GPUs keep vLLM's choice. Pure; returns a vLLM
    dtype name (e.g. ``"bfloat16"``).
    """
    if dtype == "auto" and runner == "pooling" and cpu and platform_dtypes:
        return platform_dtypes[0]
    return dtype


def _platform_dtypes() -> list[str]:
    from vllm.platforms import current_platform

    return [str(d).removeprefix("torch.") for d in current_platform.supported_dtypes]


EXECUTORS = ("auto", "uni", "mp")


def resolve_executor(executor: str, *, cpu: bool, tensor_parallel_size: int) -> str | None:
    """The executor to run (vLLM's ``distributed_executor_backend``), or None for vLLM's choice.

    ``auto`` on a CPU with one worker is ``uni``: the model runs in the engine-core process.
    vLLM's CPU platform always starts a worker process instead (``mp``), and its engine core
    then busy-waits (``sched_yield``) for each step's result: a whole core spent waiting, which
    on a small host is the core the HTTP front-end and its clients need, and the worker's
    OpenMP threads are bound to the cores left. On 2 cores, with ``uni``, sax served SmolLM2 at
    1.5x ``vllm serve``'s tokens/s at 32 concurrent requests (streamed 1.7x) and the tiny model
    at 3.0x (streamed 1.2x) (bench/RESULTS.md). Elsewhere ``auto`` leaves the choice to vLLM
    (``uni`` for one GPU). Pure; raises ValueError naming ``executor`` for an unknown value or
    ``uni`` with several workers.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}: expected one of {', '.join(EXECUTORS)}")
    if executor == "uni" and tensor_parallel_size > 1:
        raise ValueError(
            f"executor='uni' runs one worker; tensor_parallel_size={tensor_parallel_size} "
            "needs 'mp' or 'auto'"
        )
    if executor == "auto":
        return "uni" if cpu and tensor_parallel_size == 1 else None
    return executor


# sax's CPU worker (`sax.backends.vllm_cpu_worker`), and the key of the engine config's
# ``additional_config`` that carries it the thread count.
CPU_WORKER_CLS = "sax.backends.vllm_cpu_worker.CPUWorker"
THREADS_KEY = "sax_cpu_threads"

# A token's widest matmul per layer (hidden x intermediate multiply-adds) below which one OpenMP
# thread runs a model faster than several (`resolve_cpu_threads`).
SMALL_MODEL_MATMUL = 1 << 18


def resolve_cpu_threads(requested: int | None, *, cpus: int, matmul: int | None) -> int:
    """OpenMP threads for a model that runs in the engine-core process on a CPU.

    `requested` (the ``cpu_threads`` override) wins. Otherwise every CPU the process may use
    (`cpus`), as the OpenMP runtime would start, except for a model whose per-token matmul
    (`matmul`: hidden size x intermediate size of one layer, None if unknown) is under
    `SMALL_MODEL_MATMUL`: there each parallel region's work is a few microseconds, less than
    waking and joining a second thread, and the idle thread's spin-wait takes the core the
    HTTP front-end needs. On 2 cores the tiny test model (128 x 256) served 2.65x the tokens/s
    at 32 concurrent requests on one thread, and one at a time its streamed latency fell from
    75-81 ms to 50 ms (bench/RESULTS.md); SmolLM2 (576 x 1536) needs both cores. Pure.
    """
    if requested is not None:
        return requested
    if matmul is not None and matmul < SMALL_MODEL_MATMUL:
        return 1
    return max(1, cpus)


# Scheduled tokens per OpenMP thread under which a step runs on fewer threads (`step_threads`).
STEP_TOKENS_PER_THREAD = 8


def step_threads(tokens: int, ceiling: int) -> int:
    """OpenMP threads for one engine step of `tokens` scheduled tokens, at most `ceiling`.

    One thread per `STEP_TOKENS_PER_THREAD` tokens, at least one. On 2 cores the decode steps of
    SmolLM2 and of a Qwen2 1.5B took the same time on one thread as on two up to 8 sequences,
    and less on two from 16 or 32 (``bench/step_threads.py``, bench/RESULTS.md); a second
    thread's spin-wait burns a core, which the HTTP front-end needs to stream each token, so
    steps that cannot use it run without it. Pure.
    """
    return max(1, min(ceiling, tokens // STEP_TOKENS_PER_THREAD))


def model_matmul(model_dir: str, hf_overrides: Mapping[str, Any]) -> int | None:
    """Hidden size x intermediate size from a model directory's ``config.json`` (its text
    config for multimodal models), with `hf_overrides` applied; None when either is missing."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    config = {**config.get("text_config", config), **hf_overrides.get("text_config", hf_overrides)}
    hidden, inter = config.get("hidden_size"), config.get("intermediate_size")
    if not isinstance(hidden, int) or not isinstance(inter, int):
        return None
    return hidden * inter


def engine_args(settings: EngineSettings) -> Any:
    """vLLM `AsyncEngineArgs` for `settings`: a mapping of them, plus the environment defaults
    and the model's ``config.json`` (`model_matmul`). Raises ValueError naming a setting that
    cannot apply (``executor``, ``cpu_threads``)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    cpu = _is_cpu()
    kv_gib = settings.kv_cache_gib
    if kv_gib is None and cpu:
        kv_gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB)
    enforce_eager = settings.enforce_eager
    if enforce_eager is None:
        enforce_eager = bool(default_enforce_eager())
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "tokenizer": settings.model,
        "runner": settings.runner,
        "dtype": resolve_dtype(
            settings.dtype, settings.runner, cpu=cpu, platform_dtypes=_platform_dtypes()
        ),
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enforce_eager": enforce_eager,
        "load_format": settings.load_format,
        "seed": settings.seed,
        "disable_log_stats": True,  # no log lines; the Prometheus logger (`stat_logger`) records
        "enable_log_requests": False,
        "skip_tokenizer_init": False,
    }
    if settings.hf_overrides:
        kwargs["hf_overrides"] = dict(settings.hf_overrides)
    if settings.served_model_name:
        kwargs["served_model_name"] = settings.served_model_name
    executor = resolve_executor(
        settings.executor, cpu=cpu, tensor_parallel_size=settings.tensor_parallel_size
    )
    if executor is not None:
        kwargs["distributed_executor_backend"] = executor
    if cpu and executor == "uni":
        threads = resolve_cpu_threads(
            settings.cpu_threads,
            cpus=len(os.sched_getaffinity(0)),
            matmul=model_matmul(settings.model, settings.hf_overrides),
        )
        kwargs["worker_cls"] = CPU_WORKER_CLS
        kwargs["additional_config"] = {THREADS_KEY: threads}
    elif settings.cpu_threads is not None:
        raise ValueError(
            f"cpu_threads={settings.cpu_threads} applies to a model in the engine-core process "
            "on a CPU (executor 'uni' or 'auto'); vLLM's worker processes bind their own "
            "threads ($VLLM_CPU_OMP_THREADS_BIND)"
        )
    if kv_gib is not None:
        # An explicit KV size also skips the CPU warm-up pass that sizes the cache from free RSS.
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * _GIB)
    else:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs)


def client_error(exc: Exception) -> SaxError:
    """A request vLLM refused, as INVALID_ARGUMENT: vLLM's message without its
    "(parameter=..., value=...)" suffix, and `param` the SamplingOptions field it names (or
    ``prompt``), which the route renames to its public field."""
    message = str(exc.args[0]) if exc.args else "invalid request"
    parameter = getattr(exc, "parameter", None)
    if parameter:
        param = _PARAM_FIELDS.get(parameter)
    else:
        param = "prompt" if "prompt" in message else None
    return invalid(message, param)


def sampling_params(options: SamplingOptions, *, ignore_eos: bool = False, stream: bool) -> Any:
    """Saxml sampling options -> vLLM `SamplingParams` (one per request, never per model);
    INVALID_ARGUMENT if vLLM refuses them."""
    from vllm.exceptions import VLLMClientError

    try:
        return _sampling_params(options, ignore_eos=ignore_eos, stream=stream)
    except (VLLMClientError, ValueError) as exc:
        raise client_error(exc) from exc


def _sampling_params(options: SamplingOptions, *, ignore_eos: bool, stream: bool) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(
        n=options.num_samples,
        temperature=options.temperature,
        top_k=options.top_k if options.top_k > 0 else 0,
        top_p=options.top_p,
        min_p=options.min_p,
        max_tokens=options.max_decode_steps,
        min_tokens=options.min_tokens,
        seed=options.seed,
        stop=list(options.stop) or None,
        stop_token_ids=list(options.stop_token_ids) or None,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=options.repetition_penalty,
        logit_bias=dict(options.logit_bias) or None,
        logprobs=_logprobs_asked(options),
        ignore_eos=ignore_eos or options.ignore_eos,
        skip_special_tokens=options.skip_special_tokens,
        structured_outputs=_structured(options),
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )


class VllmEngine:
    """A started `AsyncLLM` with sax's request methods. Create with `await VllmEngine.start(...)`."""

    _ids = itertools.count()

    def __init__(self, engine: Any, settings: EngineSettings, metrics: CollectorRegistry) -> None:
        self._engine = engine
        self.settings = settings
        # vLLM's own Prometheus metrics of this engine (`sax.backends.vllm_metrics`).
        self.metrics = metrics
        self.tokenizer: Any = engine.tokenizer
        self._closed = False
        # The ids of recent prompts: usage counts after generation and retries of one prompt
        # read them here instead of tokenising again.
        self._text_ids = functools.lru_cache(maxsize=PROMPT_IDS_CACHED)(self._tokenize)

    @classmethod
    async def start(cls, settings: EngineSettings) -> VllmEngine:
        """Starts the engine core off the event loop; raises with vLLM's reason on failure."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        metrics = CollectorRegistry(auto_describe=True)
        built: list[Any] = []

        def build() -> None:
            from vllm.usage.usage_lib import UsageContext
            from vllm.v1.engine.async_llm import AsyncLLM
            from vllm.v1.executor import Executor

            # `AsyncLLM.from_engine_args`, with the config resolution (HF config and tokenizer
            # files, platform and environment checks: process-wide state) serialised across
            # loader threads; the engine-core start-up after it runs concurrently. Settings left
            # unset (batch sizes) resolve as for `vllm serve`, the OpenAI server's context.
            args = engine_args(settings)
            with _CONFIG_LOCK:
                config = args.create_engine_config(UsageContext.OPENAI_API_SERVER)
            # vLLM's CPU platform turns "uni" into "mp" while it resolves the config (it cannot
            # set a worker's OpenMP binding in a running process); the engine core that runs the
            # model is a fresh process here, so sax's choice stands (`resolve_executor`).
            if args.distributed_executor_backend == "uni":
                config.parallel_config.distributed_executor_backend = "uni"
            built.append(
                AsyncLLM(
                    vllm_config=config,
                    executor_class=Executor.get_class(config),
                    log_requests=args.enable_log_requests,
                    log_stats=not args.disable_log_stats,
                    usage_context=UsageContext.ENGINE_CONTEXT,
                    stat_loggers=[stat_logger(metrics)],
                )
            )

        # The engine goes through `built`, not the thread's return value: the finished futures
        # of `to_thread` can outlive the call and would keep a shut-down engine referenced.
        before = _child_pids()
        starting = asyncio.ensure_future(asyncio.to_thread(build))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # An unload or a load timeout while starting: the thread cannot be interrupted, so
            # give it a bounded time to finish and stop what it started; if it is stuck (an
            # engine core that never answers the handshake), kill the processes it spawned, which
            # ends the handshake and the thread. Either way no engine process is orphaned.
            done, _ = await asyncio.wait([starting], timeout=START_CANCEL_WAIT_S)
            if not done:
                await asyncio.to_thread(_kill_tree, _child_pids() - before - _live_engine_pids())
                await asyncio.wait([starting], timeout=10)
            if built:
                engine = built.pop()
                await asyncio.to_thread(_stop, engine, _process_tree(cls.engine_pids_of(engine)))
            raise
        engine = built.pop()
        started = cls(engine, settings, metrics)
        _ENGINES.add(started)
        return started

    # ------------------------------------------------------------ introspection

    @property
    def num_unfinished(self) -> int:
        """Requests the engine still tracks (running or waiting); 0 when idle."""
        return 0 if self._closed else int(self._engine.get_num_unfinished_requests())

    @property
    def dtype(self) -> str:
        """The dtype the engine resolved and runs, e.g. ``"bfloat16"`` for ``dtype="auto"``."""
        return str(self._engine.model_config.dtype).removeprefix("torch.")

    @property
    def batch_limits(self) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens): the most sequences and tokens one engine step
        takes, as the engine resolved them (e.g. ``(128, 2048)`` by default on a CPU)."""
        scheduler = self._engine.vllm_config.scheduler_config
        return int(scheduler.max_num_seqs), int(scheduler.max_num_batched_tokens)

    @property
    def compiled(self) -> bool:
        """Whether the engine runs a compiled model (torch.compile / CUDA graphs), not eager."""
        from vllm.config import CompilationMode

        config = self._engine.vllm_config
        return not config.model_config.enforce_eager and (
            config.compilation_config.mode != CompilationMode.NONE
        )

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV-cache block, the prefix cache's unit: a shared prefix is reused in
        whole blocks (16 on GPU, 128 on CPU by default)."""
        return int(self._engine.vllm_config.cache_config.block_size)

    @property
    def engine_pids(self) -> list[int]:
        """Process ids of the engine-core processes (gone after `shutdown`)."""
        return [] if self._closed else self.engine_pids_of(self._engine)

    @staticmethod
    def engine_pids_of(engine: Any) -> list[int]:
        return [p.pid for p in _engine_processes(engine) if p.pid is not None]

    def dead_reason(self) -> str | None:
        """Why the engine can no longer serve (an engine-core process exited, or vLLM marked
        the engine dead), or None while it is healthy or after a deliberate `shutdown`."""
        if self._closed:
            return None
        procs = _engine_processes(self._engine)
        for proc in procs:
            if not proc.is_alive():
                return f"the engine process {proc.pid} exited with code {proc.exitcode}"
        if getattr(self._engine, "errored", False):
            return f"the engine died: {getattr(self._engine, 'dead_error', 'EngineDeadError')}"
        return None

    def count_tokens(self, text: str) -> int:
        """Prompt tokens of `text`: exactly the ids the engine runs for it (`prompt_ids`)."""
        return len(self.prompt_ids(text))

    def _check_open(self) -> None:
        if self._closed:
            raise unavailable("the model's engine is shut down")

    def prompt_ids(self, text: str) -> list[int]:
        """A rendered chat's own ids; plain text tokenised with special-token parsing off
        (user text is data), framed by the tokenizer's BOS where it adds one. Recent prompts'
        ids are cached, so counting a prompt that just ran costs no second tokenisation."""
        if isinstance(text, TokenPrompt):
            return list(text.token_ids)
        return list(self._text_ids(str(text)))

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(text_token_ids(self.tokenizer, text))

    async def _prompt(self, text: str) -> dict[str, Any]:
        """The engine prompt for `text`; a long one is tokenised on a worker thread (the fast
        tokenizer releases the GIL), so the event loop keeps streaming other requests."""
        if len(text) >= THREAD_TOKENIZE_CHARS and not isinstance(text, TokenPrompt):
            return {"prompt_token_ids": await asyncio.to_thread(self.prompt_ids, text)}
        return {"prompt_token_ids": self.prompt_ids(text)}

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
            raise client_error(exc) from exc
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
        engine_prompt = await self._prompt(prompt)
        async with contextlib.aclosing(self._run("gen", engine_prompt, params)) as results:
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
                logprobs=self._token_logprobs(o, options.logprobs),
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
        engine_prompt = await self._prompt(prompt)
        async with contextlib.aclosing(self._run("stream", engine_prompt, params)) as results:
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
                            logprobs=self._token_logprobs(o, options.logprobs),
                        )
                    )
                    if o.finish_reason is not None:
                        items[-1].finish_reason = o.finish_reason
                    emitted[o.index] += len(o.text)
                if items:
                    yield items

    def _token_logprobs(self, output: Any, top: int | None) -> list[TokenLogprob] | None:
        """The output's tokens with their log-probs and top-`top` alternatives (by rank), or
        None when the request did not ask for them."""
        if top is None:
            return None
        tokens = []
        for token_id, step in zip(output.token_ids, output.logprobs or [], strict=False):
            ranked = sorted(step.items(), key=lambda kv: kv[1].rank or 0)[:top]
            chosen = step.get(token_id)
            tokens.append(
                TokenLogprob(
                    token=self._token_text(token_id, chosen),
                    token_id=token_id,
                    logprob=_logprob(chosen.logprob if chosen is not None else None),
                    top=[
                        TopLogprob(
                            token=self._token_text(t, lp), token_id=t, logprob=_logprob(lp.logprob)
                        )
                        for t, lp in ranked
                    ],
                )
            )
        return tokens

    def _token_text(self, token_id: int, logprob: Any) -> str:
        text = getattr(logprob, "decoded_token", None)
        return text if text is not None else str(self.tokenizer.decode([token_id]))

    # ------------------------------------------------------------ scoring

    def _score_prompt(self, prefix: str, suffix: str) -> tuple[list[int], int]:
        """Token ids of prefix+suffix and the index of the first suffix token.

        Tokenizes the prefix and the joined text and scores the tokens after their common
        prefix, so a token the tokenizer merges across the boundary counts as suffix. An empty
        tokenized prefix gets the BOS (or EOS) token so the first suffix token is conditioned on
        something and has a log-prob.
        """
        prefix_ids = text_token_ids(self.tokenizer, prefix) if prefix else []
        full_ids = text_token_ids(self.tokenizer, prefix + suffix)
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
        return await run_all([partial(self._score_one, prefix, s) for s in suffixes])

    # ------------------------------------------------------------ embeddings

    async def embed(self, text: str) -> list[float]:
        """The pooled sentence embedding (the model's own pooling and normalization)."""
        from vllm.pooling_params import PoolingParams

        final = None
        async with contextlib.aclosing(
            self._run("embed", await self._prompt(text), PoolingParams(task="embed"))
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

        _ENGINES.discard(self)
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


_ENGINES: weakref.WeakSet[VllmEngine] = weakref.WeakSet()
_CONFIG_LOCK = threading.Lock()


def _engine_processes(engine: Any) -> list[Any]:
    """The engine-core `multiprocessing` processes of an `AsyncLLM` (vLLM internals, checked
    by the vLLM version test)."""
    resources = getattr(engine.engine_core, "resources", None)
    manager = getattr(resources, "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


def _live_engine_pids() -> set[int]:
    pids: set[int] = set()
    for engine in list(_ENGINES):
        for proc in _process_tree(engine.engine_pids):
            pids.add(proc.pid)
    return pids


def _child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _kill_tree(pids: set[int]) -> None:
    import psutil

    procs = _process_tree(sorted(pids))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)


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


def _structured(options: SamplingOptions) -> Any:
    """vLLM's structured-output constraint (guided decoding) for the options, or None."""
    if options.json_schema is None and not options.json_object:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if options.json_schema is not None:
        return StructuredOutputsParams(json=options.json_schema)
    return StructuredOutputsParams(json_object=True)


def _logprob(value: float | None) -> float:
    """A token's log-prob as OpenAI servers report it: -inf (and unknown) clamp to -9999."""
    return -9999.0 if value is None else max(value, -9999.0)


def _logprobs_asked(options: SamplingOptions) -> int | None:
    """vLLM's ``logprobs``: the request's top-k; else 0 (vLLM then still tracks the sampled
    tokens' cumulative log-prob, the Saxml score) unless nobody reads the score: log-probs
    cost the engine a log-softmax per step and the output processor a dict per token."""
    if options.logprobs is not None:
        return options.logprobs
    return 0 if options.score else None


def _finite(value: float | None) -> float:
    """Log-probs as JSON-safe floats: None (not requested) -> 0.0, -inf -> a large negative."""
    if value is None:
        return 0.0
    return value if math.isfinite(value) else -1e30
