"""Benchmark: the JAX engine's output tokens/s and TTFT against transformers' batched generate.

Run by hand; prints ONE JSON line. Both sides decode greedily on the same float32 weights and
produce exactly ``--max-tokens`` tokens per request (EOS ignored), so throughput compares the
same work. The JAX numbers exclude compilation (a warm-up wave of the same shapes runs first and
is reported separately as ``compile_s`` / ``compiles``).

    .venv/bin/python bench/jax_engine.py                 # SmolLM2-135M, 1 and 32 concurrent
    .venv/bin/python bench/jax_engine.py --model tiny    # the tiny random Llama
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sax.models.jax import JaxLM, SmolLM2_135M, Tiny
from sax.server.sampling import SamplingOptions
from sax.server.servable import LoadSpec

TOPICS = [
    "the ocean",
    "a robot learning to paint",
    "the history of bread",
    "why the sky is blue",
    "a city on Mars",
    "the rules of chess",
    "volcanoes",
    "a friendly dragon",
]


def prompts(servable: JaxLM, n: int) -> list[list[int]]:
    texts = [
        servable.chat_prompt(
            [{"role": "user", "content": f"Write a story about {TOPICS[i % len(TOPICS)]} #{i}."}]
        )
        for i in range(n)
    ]
    return [servable._prefix_ids(t) for t in texts]


async def jax_wave(servable: JaxLM, batch: list[list[int]], max_tokens: int) -> dict[str, Any]:
    engine = servable._engine()
    options = SamplingOptions(max_decode_steps=max_tokens)
    start = time.perf_counter()
    ttft: list[float] = []

    async def one(prompt: list[int]) -> int:
        handle = engine.submit(prompt, options, ignore_eos=True)
        first = True
        async for _ in handle.stream():
            if first:
                ttft.append(time.perf_counter() - start)
                first = False
        return len(handle.token_ids[0])

    counts = await asyncio.gather(*(one(p) for p in batch))
    wall = time.perf_counter() - start
    return {
        "tokens_per_s": round(sum(counts) / wall, 1),
        "ttft_p50_s": round(statistics.median(ttft), 4) if ttft else None,
        "wall_s": round(wall, 3),
    }


def transformers_wave(ref: Any, tokenizer: Any, batch: list[list[int]], max_tokens: int) -> float:
    import torch

    width = max(len(p) for p in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    start = time.perf_counter()
    with torch.no_grad():
        out = ref.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    wall = time.perf_counter() - start
    return round((out.shape[1] - width) * len(batch) / wall, 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    cls: type[JaxLM] = SmolLM2_135M if args.model == "smollm2" else Tiny
    overrides = {"num_slots": max(levels), "max_seq_len": 256, "max_prefill_batch": 8}
    servable = cls(LoadSpec(f"/sax/bench/{args.model}", "", "None", overrides))
    t0 = time.perf_counter()
    await servable.load()
    load_s = time.perf_counter() - t0
    engine = servable._engine()

    result: dict[str, Any] = {
        "bench": "jax_engine",
        "model": args.model,
        "max_tokens": args.max_tokens,
        "load_s": round(load_s, 2),
        "jax": {},
        "transformers": {},
    }
    for c in levels:
        batch = prompts(servable, c)
        t0 = time.perf_counter()
        for _ in range(3):  # compile this level's buckets (arrival order varies the first ones)
            before = engine.compile_count
            await jax_wave(servable, batch, args.max_tokens)
            if engine.compile_count == before:
                break
        warm_s = time.perf_counter() - t0
        before = engine.compile_count
        run = await jax_wave(servable, batch, args.max_tokens)
        run["warmup_s"] = round(warm_s, 2)
        run["new_compiles_when_warm"] = engine.compile_count - before
        result["jax"][str(c)] = run
    result["compiles"] = engine.compile_count
    result["max_compiles"] = engine.max_compiles
    await servable.unload()

    if not args.no_transformers:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model_dir = servable.default_model_dir()
        ref = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        for c in levels:
            batch = prompts(servable, c)
            transformers_wave(ref, servable.tokenizer, batch[:1], 4)  # warm-up
            result["transformers"][str(c)] = {
                "tokens_per_s": transformers_wave(ref, servable.tokenizer, batch, args.max_tokens)
            }
        for c in levels:
            ours = result["jax"][str(c)]["tokens_per_s"]
            theirs = result["transformers"][str(c)]["tokens_per_s"]
            result["jax"][str(c)]["speedup_vs_transformers"] = round(ours / theirs, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
