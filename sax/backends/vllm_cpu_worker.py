"""vLLM's CPU worker, with the OpenMP thread count sax chose for the engine.

On a CPU sax runs the model in vLLM's engine-core process (the ``uni`` executor), which vLLM
does not bind to cores: its OpenMP runtime would start a thread per CPU the process may use.
sax picks the count instead (`vllm_engine.resolve_cpu_threads`) and hands it to this worker
through the engine config's ``additional_config`` under `THREADS_KEY`; vLLM starts the worker
class named by the config's ``worker_cls`` (`vllm_engine.CPU_WORKER_CLS`, this `CPUWorker`). The
count is set before vLLM's own device set-up, which freezes ``torch.set_num_threads``, and so
before torch.compile generates kernels, whose C++ code is specialised on it.
"""

from __future__ import annotations

import torch
from vllm.v1.worker import cpu_worker

from sax.backends.vllm_engine import THREADS_KEY


class CPUWorker(cpu_worker.CPUWorker):
    """`vllm.v1.worker.cpu_worker.CPUWorker` that first sets torch's intra-op threads."""

    def init_device(self) -> None:
        threads = (self.vllm_config.additional_config or {}).get(THREADS_KEY)
        if threads:
            torch.set_num_threads(int(threads))
        super().init_device()

    def cpu_threads(self) -> int:
        """The intra-op (OpenMP) threads the model runs on; a ``collective_rpc`` method."""
        return torch.get_num_threads()
