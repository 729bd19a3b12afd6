"""vLLM's CPU worker, on the OpenMP threads sax chose for the engine, per step.

On a CPU sax runs the model in vLLM's engine-core process (the ``uni`` executor), which vLLM
does not bind to cores: its OpenMP runtime would start a thread per CPU the process may use.
sax picks the count instead (`vllm_engine.resolve_cpu_threads`) and hands it to this worker
through the engine config's ``additional_config`` under `THREADS_KEY`; vLLM starts the worker
class named by the config's ``worker_cls`` (`vllm_engine.CPU_WORKER_CLS`, this `CPUWorker`). The
count is set before vLLM's own device set-up, which replaces ``torch.set_num_threads`` with a
no-op, and so before torch.compile generates kernels (vLLM compiles them with
``cpp.dynamic_threads``: they follow the count at run time).

That count is a ceiling. Each step runs on `vllm_engine.step_threads` of it, from the tokens the
scheduler put in the step: a step of a few tokens (one request decoding) runs on one thread and
leaves the other cores to the HTTP front-end, which streams each token as the step ends.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from vllm.v1.worker import cpu_worker

from sax.backends.vllm_engine import THREADS_KEY, step_threads

# torch's own setter: vLLM's `init_device` rebinds ``torch.set_num_threads`` to a no-op.
_set_num_threads = torch._C.set_num_threads


class CPUWorker(cpu_worker.CPUWorker):
    """`vllm.v1.worker.cpu_worker.CPUWorker` that sets torch's intra-op threads, then sizes each
    step's team to the step (`step_threads`)."""

    _ceiling = 1
    _threads = 1

    def init_device(self) -> None:
        threads = (self.vllm_config.additional_config or {}).get(THREADS_KEY)
        if threads:
            _set_num_threads(int(threads))
        self._ceiling = self._threads = torch.get_num_threads()
        self._steps: Counter[int] = Counter()
        super().init_device()

    def execute_model(self, scheduler_output: Any) -> Any:
        tokens = scheduler_output.total_num_scheduled_tokens
        threads = step_threads(tokens, self._ceiling)
        if threads != self._threads:
            _set_num_threads(threads)
            self._threads = threads
        if tokens:  # counted as torch reports it, so a setter that did nothing would show
            self._steps[torch.get_num_threads()] += 1
        return super().execute_model(scheduler_output)

    def cpu_threads(self) -> int:
        """The most intra-op (OpenMP) threads a step runs on; a ``collective_rpc`` method."""
        return self._ceiling

    def step_threads(self) -> dict[int, int]:
        """Steps run so far, by the threads each ran on; a ``collective_rpc`` method."""
        return dict(self._steps)
