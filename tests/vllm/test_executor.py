"""Where vLLM runs the model: in the engine-core process on a CPU (``uni``), unless asked for a
worker process (``mp``); and on how many OpenMP threads it runs there."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from sax.backends import vllm_cpu_worker
from sax.backends.vllm_engine import (
    CPU_WORKER_CLS,
    SMALL_MODEL_MATMUL,
    STEP_TOKENS_PER_THREAD,
    THREADS_KEY,
    EngineSettings,
    engine_args,
    model_matmul,
    resolve_cpu_threads,
    resolve_executor,
    step_threads,
)
from sax.models.vllm import Tiny
from sax.server.servable import LoadSpec
from tests.vllm.conftest import TINY_OVERRIDES


def test_auto_runs_one_cpu_worker_in_the_engine_core_and_leaves_the_rest_to_vllm() -> None:
    assert resolve_executor("auto", cpu=True, tensor_parallel_size=1) == "uni"
    assert resolve_executor("auto", cpu=True, tensor_parallel_size=2) is None
    assert resolve_executor("auto", cpu=False, tensor_parallel_size=1) is None
    assert resolve_executor("auto", cpu=False, tensor_parallel_size=4) is None


def test_an_explicit_executor_wins() -> None:
    assert resolve_executor("mp", cpu=True, tensor_parallel_size=1) == "mp"
    assert resolve_executor("uni", cpu=False, tensor_parallel_size=1) == "uni"
    assert resolve_executor("mp", cpu=False, tensor_parallel_size=2) == "mp"


@pytest.mark.parametrize(
    ("executor", "tensor_parallel_size", "named"),
    [("threads", 1, "executor='threads'"), ("uni", 2, "tensor_parallel_size=2")],
)
def test_an_impossible_executor_is_refused_by_name(
    executor: str, tensor_parallel_size: int, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        resolve_executor(executor, cpu=True, tensor_parallel_size=tensor_parallel_size)


def test_the_engine_args_carry_the_resolved_executor(tiny: Tiny) -> None:
    model = tiny.engine_settings(tiny.model_dir()).model
    assert engine_args(EngineSettings(model=model)).distributed_executor_backend == "uni"
    mp = EngineSettings(model=model, executor="mp")
    assert engine_args(mp).distributed_executor_backend == "mp"


async def test_the_shared_engine_runs_its_model_in_the_engine_core(tiny: Tiny) -> None:
    """On a CPU the default is one engine process that computes: no worker process beside it
    (vLLM's CPU layout would add one, and its engine core would busy-wait for it)."""
    engine = tiny.engine
    assert engine is not None
    assert engine._engine.vllm_config.parallel_config.distributed_executor_backend == "uni"
    (core,) = [psutil.Process(pid) for pid in engine.engine_pids]
    workers = [
        p for p in core.children(recursive=True) if "Worker" in (p.name() + " ".join(p.cmdline()))
    ]
    assert workers == []
    samples = await tiny.generate("hello", tiny.sampling({"per_example_max_decode_steps": 4}))
    assert samples[0].num_tokens == 4


@pytest.mark.parametrize(
    ("requested", "cpus", "matmul", "threads"),
    [
        (None, 2, 128 * 256, 1),  # the tiny test model: one thread
        (None, 2, SMALL_MODEL_MATMUL - 1, 1),
        (None, 2, SMALL_MODEL_MATMUL, 2),
        (None, 2, 576 * 1536, 2),  # SmolLM2: every core
        (None, 16, 1536 * 8960, 16),
        (None, 4, None, 4),  # unknown shape: every core
        (None, 0, None, 1),
        (3, 2, 128 * 256, 3),  # the override wins either way
        (1, 16, 1536 * 8960, 1),
    ],
)
def test_cpu_threads_are_every_core_but_one_for_a_small_model(
    requested: int | None, cpus: int, matmul: int | None, threads: int
) -> None:
    assert resolve_cpu_threads(requested, cpus=cpus, matmul=matmul) == threads


def test_the_matmul_comes_from_the_config_with_its_overrides(tmp_path: Path) -> None:
    assert model_matmul(str(tmp_path), {}) is None  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "intermediate_size": 96}))
    assert model_matmul(str(tmp_path), {}) == 64 * 96
    assert model_matmul(str(tmp_path), {"intermediate_size": 128}) == 64 * 128
    nested = {"text_config": {"hidden_size": 8, "intermediate_size": 16}, "hidden_size": 1}
    (tmp_path / "config.json").write_text(json.dumps(nested))
    assert model_matmul(str(tmp_path), {}) == 8 * 16
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    assert model_matmul(str(tmp_path), {}) is None


def test_the_engine_args_carry_the_thread_count_to_sax_s_worker(tiny: Tiny) -> None:
    model = tiny.engine_settings(tiny.model_dir()).model
    args = engine_args(EngineSettings(model=model))
    assert args.worker_cls == CPU_WORKER_CLS == f"{vllm_cpu_worker.__name__}.CPUWorker"
    assert args.additional_config == {THREADS_KEY: 1}
    assert engine_args(EngineSettings(model=model, cpu_threads=2)).additional_config == {
        THREADS_KEY: 2
    }
    mp = engine_args(EngineSettings(model=model, executor="mp"))
    assert mp.worker_cls == "auto" and not mp.additional_config
    with pytest.raises(ValueError, match="cpu_threads=2"):
        engine_args(EngineSettings(model=model, executor="mp", cpu_threads=2))


async def test_the_shared_engine_runs_the_tiny_model_on_one_thread(tiny: Tiny) -> None:
    """The tiny model is under `SMALL_MODEL_MATMUL`: its engine core runs one OpenMP thread
    (the runtime's default would be one per CPU), set by sax's worker before vLLM's set-up."""
    engine = tiny.engine
    assert engine is not None
    assert await engine._engine.collective_rpc("cpu_threads") == [1]
    samples = await tiny.generate("hello", tiny.sampling({"per_example_max_decode_steps": 4}))
    assert samples[0].num_tokens == 4


@pytest.mark.parametrize(
    ("tokens", "ceiling", "threads"),
    [
        (1, 2, 1),  # one request decoding
        (STEP_TOKENS_PER_THREAD * 2 - 1, 2, 1),
        (STEP_TOKENS_PER_THREAD * 2, 2, 2),
        (32, 2, 2),  # 32 requests decoding
        (4096, 2, 2),  # a long prefill: never over the ceiling
        (40, 16, 5),
        (4096, 16, 16),
        (0, 2, 1),
        (4096, 1, 1),
    ],
)
def test_a_step_runs_on_a_thread_per_eight_tokens_up_to_the_ceiling(
    tokens: int, ceiling: int, threads: int
) -> None:
    assert step_threads(tokens, ceiling) == threads


async def test_each_step_runs_on_the_threads_its_tokens_can_use() -> None:
    """With a ceiling of 2, one request's decode steps run on one OpenMP thread (the other core
    is the front-end's), and a step that prefills a long prompt on both."""
    servable = Tiny(
        LoadSpec(
            "/sax/test/tiny2t", "sax.models.vllm.Tiny", "None", {**TINY_OVERRIDES, "cpu_threads": 2}
        )
    )
    await servable.load()
    try:
        engine = servable.engine
        assert engine is not None
        rpc = engine._engine.collective_rpc
        assert await rpc("cpu_threads") == [2]
        decode = servable.sampling({"per_example_max_decode_steps": 8})
        samples = await servable.generate("hello", decode)
        assert samples[0].num_tokens == 8
        (short,) = await rpc("step_threads")
        assert set(short) == {1} and short[1] >= 8
        samples = await servable.generate(" ".join(["the story of a red fox"] * 12), decode)
        assert samples[0].num_tokens == 8
        (long,) = await rpc("step_threads")
        assert long[2] >= 1  # the prefill
        assert long[1] >= short[1] + 7  # its decode steps
    finally:
        await servable.unload()
