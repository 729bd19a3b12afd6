"""Where vLLM runs the model: in the engine-core process on a CPU (``uni``), unless asked for a
worker process (``mp``)."""

from __future__ import annotations

import psutil
import pytest

from sax.backends.vllm_engine import EngineSettings, engine_args, resolve_executor
from sax.models.vllm import Tiny


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
