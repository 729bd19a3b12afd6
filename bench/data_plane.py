"""Data-plane benchmark: sax vs vLLM's own OpenAI server vs offline vLLM, on one model and machine.

Run by hand (never as a test); prints ONE JSON line. The sax cell and vLLM's server are up
together and their modes alternate for `--rounds` rounds (each mode reports its median round): on
a shared machine the CPU on offer drifts over minutes, and back-to-back blocks would compare
different machines. Offline runs last, alone (``--offline``).

`--settings`:
- ``defaults`` (the default): each side as a user gets it. sax publishes the servable with no
  engine override (``saxutil publish ... <servable> None 1``); vLLM runs
  ``python -m vllm.entrypoints.openai.api_server --model DIR`` with one engine flag, its KV cache
  size (sax's default, 1 GiB; vLLM's own default takes 92% of the machine's memory and does not
  start on a shared one). Only sampling is pinned (per request: greedy, exactly `--tokens`
  tokens, EOS ignored);
- ``same``: both sides with the same explicit engine settings (dtype ``auto``, context, KV cache,
  eager mode, stats on).

`--model`: ``tiny`` (a 2-layer Llama built in-process), ``smollm2`` (SmolLM2-135M-Instruct's
shipped weights), or the seed's servables with checkpoint ``None``, ``qwen1p5b`` and ``gemma4b``
(random weights of the published architecture: sax publishes ``... None 1``, vLLM's server loads
the same config with ``--load-format dummy`` and, with ``defaults``, the servable's 4,096-token
context, since its own default of the model's full 131,072 positions does not fit the 1 GiB KV
cache). `--one-system-at-a-time` measures sax's rounds and then vLLM's, each server alone, for
models of which two copies do not fit in memory (`--vllm-first`: the other order).
`--sax-override KEY=VALUE` adds a servable override to sax's publish (e.g. vLLM's
``max_num_seqs=128`` to match its server's defaults in a check).

Modes, `--workload distinct` (default; distinct prompts, no shared prefix):
- ``sax_openai``/``sax_openai_stream``: sax's model server, ``/v1/completions`` with and without
  ``stream``, the same requests as vLLM's;
- ``sax_generate``/``sax_generate_stream``: the sax client (``AsyncModel``: replica discovery via
  WatchLoc, then ``lm.generate``/``lm.generate_stream`` on the model server);
- ``vllm_server``/``vllm_server_stream``: vLLM's server, ``/v1/completions``;
- ``offline``: ``vllm.LLM.generate`` on all prompts at once (the throughput ceiling), and
  ``sequential``: one prompt at a time, as the original Saxml vLLM servable ran;
- ``http_overhead``: p50 of ``lm.generate`` on the ``Echo`` test servable through the same
  model server minus the p50 of calling ``Echo.generate`` in process.

`--workload prefix`: two model servers, the model published with two replicas, and the sax
client streaming. Each run picks replicas either by prefix (``prefix``: the client's default,
`sax.client.picker.choose` with the prompt as key) or by load alone (``load``: power of two
choices, the client's previous behaviour); `--prefix-variants` adds the prefix choice with
other picker settings: ``prefix_sN`` (the absolute load slack N instead of the default) and
``prefix_rendezvous`` (no memory of keys: every keyed request by its rendezvous order under the
load bound, as the client chose before it remembered keys). Workloads:
- ``shared``: `--requests` requests, each one of `--system-prompts` system prompts (each at
  least `--system-blocks` whole KV blocks long in the model's own tokens, so that its requests
  share that many blocks whatever the tokenizer) plus a distinct question, in a seeded random
  order; the model's KV cache holds every prompt many times over, so only the first sight of a
  prompt on a replica misses;
- ``overflow``: the same servable published a second time on the same servers with a small KV
  cache, and `--overflow-system-prompts` prompts sent `--overflow-uses` times each. The cache
  is sized from the engine's block size and the tokenizer's counts (``overflow_sizing`` in the
  output; `--overflow-kv-gib` sets it by hand): the blocks of the in-flight requests of one
  replica beyond their shared prefix, plus `--overflow-share` (a bit over half) of all the
  workload's shared prefix blocks; the blocks vLLM made are reported under ``kv_cache``.
  Choosing by prefix, each replica caches about half the prompts, which fit; choosing by load,
  every replica sees every prompt and evicts some before their next use;
- ``distinct``: `--distinct-requests` prompts longer than the routing prefix that differ from
  their first characters (each its own key, nothing shared: affinity's cost, if any, without
  its benefit), and ``distinct_short``: prompts under the routing prefix, which both choices
  place by load alone (the same code path: a gauge of run-to-run noise).
Reported per workload and choice: the prefix-cache hit rate (prompt tokens found in vLLM's
prefix cache over those looked up, from both model servers' ``/metrics``, that model's lines
only), TTFT p50 and output tokens/s; the share of keyed requests placed off their home replica
(``spilled``: past the picker's load bound, the tight one of a key's first sight or the loose
one of its repeats); for the shared-prefix workloads the ideal hit rate
of the run's own requests (``ideal_hit_rate``: every request but the first of each system
prompt finds the prompt's shared blocks cached) and a stricter one
(``ideal_hit_rate_after_first_token``: only those sent after an earlier use of their prompt had
streamed its first token); under ``ratios``, prefix over load of the medians over
rounds, and for the distinct workloads the ratio within each round too. Every run uses prompts
no earlier run sent, so no run inherits another's cache, and the order of the two choices
alternates round by round.

Per mode of the distinct workload, also where the CPU went during its rounds: ``cpu_s``, CPU
seconds by process kind (engine core, worker where there is one, each server, this bench), and
``wait_s``, the seconds each kind's threads were runnable but waited for a core (other processes
on their core). Meaningful one system at a time. And ``engine``, from the engine's own
histograms over the rounds (vLLM's ``/metrics`` on the serving process): its steps and tokens per
step (how full its batches were), and per request the mean milliseconds from the engine's
arrival to finish (``e2e``: queue, prefill, decode) and outside it (the client's mean latency
minus ``e2e``: HTTP, parsing, tokenising, the reply, the client's own turn-around).

Load: `--concurrency` closed-loop workers (default 32), each sending requests back to back until
`--requests` are done, every request decoding exactly `--tokens` tokens (EOS ignored).

    .venv/bin/python bench/data_plane.py --model tiny
    .venv/bin/python bench/data_plane.py              # SmolLM2-135M-Instruct
    .venv/bin/python bench/data_plane.py --model tiny --workload prefix
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KV_CACHE_GIB = 1.0
# How long either system may take to load its model: Gemma4B compiles for about 12 minutes on a
# 2-core CPU without native bfloat16.
LOAD_WAIT_S = 1800
MAX_MODEL_LEN = 512  # the tiny model's context; prompts + 64 tokens fit easily
# --model NAME: the servable sax publishes, and whether it runs random weights (checkpoint None:
# the seed's models, whose directory holds a config and a stand-in tokenizer and no weights).
SERVABLES = {
    "tiny": ("sax.models.vllm.Tiny", False),
    "smollm2": ("sax.models.vllm.SmolLM2_135M", False),
    "qwen1p5b": ("sax.models.vllm.QWen1P5B", True),
    "gemma4b": ("sax.models.vllm.Gemma4B", True),
}
DTYPE = "auto"  # --settings same: what both sides run

WORDS = (
    "robot journey river market garden engine story winter castle music planet library "
    "dragon harbor forest science window mountain letter kitchen"
).split()


def prompts(n: int) -> list[str]:
    """Distinct prompts of similar length (no shared prefix beyond a few words)."""
    out = []
    for i in range(n):
        picks = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6)]
        out.append(f"Request {i}: write a short story about a {' and a '.join(picks)}.")
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


@dataclass
class Run:
    """Per-request measurements of one load run."""

    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    events: list[tuple[str, float, float]] = field(default_factory=list)  # (prompt, sent, first)
    # CPU seconds per process kind (`cpu_by_process`) during the run, this bench's own included,
    # and the seconds each kind's threads waited for a core.
    cpu_s: dict[str, float] = field(default_factory=dict)
    wait_s: dict[str, float] = field(default_factory=dict)
    # The engine's own histograms over the run (`engine_totals` after minus before).
    engine: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies)
        out: dict[str, Any] = {
            "requests": n,
            "errors": self.errors,
            "requests_per_s": round(n / self.wall_s, 2),
            "output_tokens_per_s": round(self.tokens / self.wall_s, 1),
            "latency_p50_ms": ms(pct(self.latencies, 0.5)),
            "latency_p99_ms": ms(pct(self.latencies, 0.99)),
        }
        if self.ttfts:
            out["ttft_p50_ms"] = ms(pct(self.ttfts, 0.5))
        if self.cpu_s:
            out["cpu_s"] = {k: round(v, 2) for k, v in sorted(self.cpu_s.items())}
            out["wait_s"] = {
                k: round(self.wait_s[k], 2) for k in sorted(self.cpu_s) if k in self.wait_s
            }
        if self.engine:
            out["engine"] = engine_summary(self.engine, self.latencies)
        return out


# vLLM's histograms that say where a request's time went, and how full the engine's steps were.
ENGINE_HISTOGRAMS = (
    "vllm:iteration_tokens_total",  # tokens per engine step
    "vllm:e2e_request_latency_seconds",  # from the engine's arrival (add_request) to finished
    "vllm:request_queue_time_seconds",  # waiting for the scheduler
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
)


async def engine_totals(url: str) -> dict[str, float]:
    """The `ENGINE_HISTOGRAMS`' ``_sum`` and ``_count`` on a server's ``/metrics``, summed over
    its engines (every ``vllm:`` line there belongs to the benchmarked model)."""
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(f"{url}/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        for suffix in ("_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and base in ENGINE_HISTOGRAMS:
                out[name] = out.get(name, 0.0) + float(rest.rsplit(" ", 1)[1])
    return out


def engine_summary(engine: dict[str, float], latencies: list[float]) -> dict[str, Any]:
    """From a run's `engine_totals` difference: engine steps and tokens per step; per request,
    mean ms in the engine (``e2e``, queue, prefill, decode) and outside it (the client's mean
    latency minus the engine's: HTTP, parsing, tokenising, the response)."""

    def mean_ms(name: str) -> float | None:
        count = engine.get(f"{name}_count", 0.0)
        return round(1000 * engine.get(f"{name}_sum", 0.0) / count, 1) if count else None

    steps = engine.get("vllm:iteration_tokens_total_count", 0.0)
    e2e = mean_ms("vllm:e2e_request_latency_seconds")
    out: dict[str, Any] = {
        "steps": int(steps),
        "tokens_per_step": round(engine.get("vllm:iteration_tokens_total_sum", 0.0) / steps, 2)
        if steps
        else None,
        "e2e_mean_ms": e2e,
        "queue_mean_ms": mean_ms("vllm:request_queue_time_seconds"),
        "prefill_mean_ms": mean_ms("vllm:request_prefill_time_seconds"),
        "decode_mean_ms": mean_ms("vllm:request_decode_time_seconds"),
    }
    if e2e is not None and latencies:
        out["outside_engine_mean_ms"] = round(1000 * statistics.mean(latencies) - e2e, 1)
    return out


def cpu_by_process() -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds (user + system) so far of every process on this machine, and seconds its
    threads were runnable but waited for a core (``/proc/PID/task/TID/schedstat``), both summed
    by kind: the process name, or for Python processes the program (``sax admin-server``,
    ``api_server``, this bench)."""
    import psutil

    cpu: dict[str, float] = {}
    wait: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times, name = proc.info["cpu_times"], proc.info["name"] or "?"
        if times is None:
            continue
        cmdline = proc.info["cmdline"] or []
        if name.startswith("python") or name == "sax":
            words = [Path(w).name for w in cmdline[1:3] if not w.startswith("-")]
            name = " ".join(words) or name
        cpu[name] = cpu.get(name, 0.0) + times.user + times.system
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    wait_ns = int((task / "schedstat").read_text().split()[1])
                    wait[name] = wait.get(name, 0.0) + wait_ns / 1e9
    return cpu, wait


# One request: returns (output tokens, time to first token or None).
Request = Callable[[str], Awaitable[tuple[int, float | None]]]


async def load(
    request: Request, texts: list[str], concurrency: int, metrics_url: str | None = None
) -> Run:
    """`texts` sent by `concurrency` closed-loop workers; with `metrics_url` (the serving
    process's), also the engine's histograms over the run."""
    run = Run()
    queue = list(reversed(texts))

    async def worker() -> None:
        while queue:
            text = queue.pop()
            start = time.perf_counter()
            try:
                tokens, ttft = await request(text)
            except Exception as exc:
                run.errors += 1
                print(f"request failed: {exc!r}", file=sys.stderr)
                continue
            run.latencies.append(time.perf_counter() - start)
            run.tokens += tokens
            if ttft is not None:
                run.ttfts.append(ttft - start)
                run.events.append((text, start, ttft))

    engine = await engine_totals(metrics_url) if metrics_url else {}
    cpu, wait = cpu_by_process()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall_s = time.perf_counter() - start
    cpu_after, wait_after = cpu_by_process()
    if metrics_url:
        engine_after = await engine_totals(metrics_url)
        run.engine = {k: v - engine.get(k, 0.0) for k, v in engine_after.items()}
    run.cpu_s = {k: v - cpu.get(k, 0.0) for k, v in cpu_after.items() if v - cpu.get(k, 0.0) > 0.05}
    run.wait_s = {k: v - wait[k] for k, v in wait_after.items() if k in wait}
    return run


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """A subprocess in its own process group, stopped (group-wide, by its pid) on exit."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=REPO,
        )
        try:
            yield
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # engine children left in the group


def wait_http(url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).is_success:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up in {timeout_s}s; see {log}")


def configure_cell(common: list[str], fs_root: Path) -> None:
    """``sax admin-config``; the benchmark is sequential, so blocking here delays nothing."""
    cmd = [str(BIN / "sax"), "admin-config", *common, "--fs_root", str(fs_root)]
    subprocess.run(cmd, check=True, capture_output=True)


# ---------------------------------------------------------------- systems


Modes = dict[str, Request]


def sax_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The servable overrides: sampling only with ``defaults`` (decode exactly `--tokens`),
    plus the shared engine settings with ``same`` (eager, as `vllm_engine_flags`)."""
    overrides: dict[str, Any] = {"ignore_eos": True, "max_decode_steps": args.tokens}
    if args.model == "smollm2":
        overrides["chat"] = False  # the same raw prompts as every other contender
    if args.settings == "same":
        overrides |= {"kv_cache_gib": KV_CACHE_GIB, "max_model_len": MAX_MODEL_LEN, "dtype": DTYPE}
        overrides["enforce_eager"] = True
    for item in args.sax_override:  # KEY=VALUE, VALUE as JSON (else a string)
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise SystemExit(f"--sax-override {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def vllm_engine_flags(args: argparse.Namespace) -> list[str]:
    """vLLM's engine flags. ``defaults`` sets only the KV cache size, to sax's default (1 GiB):
    vLLM's own CPU default reserves 92% of the machine's memory and refuses to start on a
    machine where other processes hold more than 8%. For random-weight servables also
    ``--load-format dummy`` (sax's ``None`` checkpoint) and, with ``defaults``, the servable's
    default context: vLLM's own, the model's 131,072 positions, needs more than 1 GiB of KV
    cache for one sequence and does not start."""
    from sax.server.registry import resolve

    path, random_weights = SERVABLES[args.model]
    kv = ["--kv-cache-memory-bytes", str(int(KV_CACHE_GIB * (1 << 30)))]
    dummy = ["--load-format", "dummy"] if random_weights else []
    if args.settings == "defaults":
        if random_weights:
            context = resolve(path).Config().model_dump()["max_model_len"]
            dummy += ["--max-model-len", str(context)]
        return [*kv, *dummy]
    return [
        *("--dtype", DTYPE, "--max-model-len", str(MAX_MODEL_LEN)),
        *kv,
        *dummy,
        "--enforce-eager",
    ]


def vllm_server_env() -> dict[str, str]:
    """vLLM server's environment: offline. The OpenMP runtime and allocator are vLLM's own
    choice on both sides (its CPU platform preloads them for the engine processes)."""
    return {"HF_HUB_OFFLINE": "1"}


def openai_modes(http: httpx.AsyncClient, tokens: int) -> tuple[Request, Request]:
    """``/v1/completions`` without and with ``stream`` on an OpenAI-compatible server (model
    ``lm``); greedy, exactly `tokens` tokens."""
    base = {"model": "lm", "max_tokens": tokens, "ignore_eos": True, "temperature": 0}

    async def generate(text: str) -> tuple[int, float | None]:
        r = await http.post("/v1/completions", json={**base, "prompt": text})
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"]), None

    async def generate_stream(text: str) -> tuple[int, float | None]:
        body = {**base, "prompt": text, "stream": True}
        body["stream_options"] = {"include_usage": True}
        first: float | None = None
        count = 0
        async with http.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if data.get("choices") and first is None:
                    first = time.perf_counter()
                if data.get("usage"):
                    count = int(data["usage"]["completion_tokens"])
        return count, first

    return generate, generate_stream


@dataclass
class SaxCell:
    root: Path
    lm: Any  # sax.client.AsyncModel of the benchmarked model
    server_urls: list[str]
    modes: Modes


@contextlib.asynccontextmanager
async def sax_system(
    model_dir: Path,
    args: argparse.Namespace,
    work: Path,
    result: dict[str, Any],
    replicas: int = 1,
) -> AsyncIterator[SaxCell]:
    """A sax cell (admin + `replicas` model server processes) serving the model.

    With one replica, also measures the HTTP layer's overhead with the Echo test servable (into
    `result`).
    """
    import sax.client as sax_client

    root = work / "sax_root"
    cell = "/sax/bench"
    admin_port = free_port()
    server_ports = [free_port() for _ in range(replicas)]
    common = ["--sax_cell", cell, "--sax_root", str(root)]
    configure_cell(common, root / "fs")
    sax = str(BIN / "sax")
    admin_log = work / "admin.log"
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(
            process([sax, "admin-server", *common, "--port", str(admin_port)], admin_log)
        )
        for i, port in enumerate(server_ports):
            cmd = [sax, "model-server", *common, "--port", str(port), "--backends", "vllm,test"]
            stack.enter_context(process(cmd, work / f"model_server_{i}.log"))
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", 60, admin_log)
        for i, port in enumerate(server_ports):
            wait_http(f"http://127.0.0.1:{port}/healthz", 60, work / f"model_server_{i}.log")
        model_path, random_weights = SERVABLES[args.model]
        checkpoint = "None" if random_weights else str(model_dir)
        lm_id, echo_id = f"{cell}/lm", f"{cell}/echo"

        # The admin client is blocking: run it in threads so Ctrl-C still unwinds the processes.
        async def publish(*args: Any) -> None:
            await asyncio.to_thread(sax_client.publish, *args, sax_root=str(root))

        async def wait(model_id: str, n: int, timeout_s: float) -> None:
            await asyncio.to_thread(
                sax_client.wait_for_ready, model_id, n, timeout_s, sax_root=str(root)
            )

        await publish(lm_id, model_path, checkpoint, replicas, sax_overrides(args))
        start = time.perf_counter()
        await wait(lm_id, replicas, LOAD_WAIT_S)
        result["sax_load_s"] = round(time.perf_counter() - start, 1)
        lm = sax_client.AsyncModel(lm_id, sax_root=str(root))
        urls = [f"http://127.0.0.1:{port}" for port in server_ports]
        modes: Modes = {}
        if replicas == 1:
            await publish(echo_id, "sax.models.test.Echo", "None", 1)
            await wait(echo_id, 1, 60)

            async def generate(text: str) -> tuple[int, float | None]:
                samples = await lm.lm.generate_samples(text)
                return samples[0].num_tokens, None

            async def generate_stream(text: str) -> tuple[int, float | None]:
                first: float | None = None
                stream = lm.lm.generate_stream(text)
                async with stream:
                    async for _chunk in stream:
                        if first is None:
                            first = time.perf_counter()
                # Chunks can carry several tokens when the engine outpaces the reader.
                return args.tokens if stream.samples else 0, first

            result["http_overhead"] = await http_overhead(
                sax_client.AsyncModel(echo_id, sax_root=str(root)),
                server_ports[0],
                args.overhead_calls,
            )
            limits = httpx.Limits(max_connections=args.concurrency * 2)
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=urls[0], timeout=600, limits=limits)
            )
            openai_generate, openai_stream = openai_modes(http, args.tokens)
            modes = {
                "sax_openai": openai_generate,
                "sax_openai_stream": openai_stream,
                "sax_generate": generate,
                "sax_generate_stream": generate_stream,
            }
        yield SaxCell(root, lm, urls, modes)


async def http_overhead(echo: Any, server_port: int, calls: int) -> dict[str, float]:
    """p50 of lm.generate on Echo via the model server, minus Echo.generate called in process."""
    from sax.models.test import Echo
    from sax.server.servable import LoadSpec

    local = Echo(LoadSpec("/sax/bench/echo", "sax.models.test.Echo", "None"))
    options = local.sampling({})
    in_process, via_client, via_http = [], [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server_port}") as http:
        body = {"text": "hello world", "extra_inputs": {}}
        for _ in range(calls):
            t = time.perf_counter()
            await local.generate("hello world", options)
            in_process.append(time.perf_counter() - t)
            t = time.perf_counter()
            await echo.lm.generate("hello world")
            via_client.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = await http.post("/v1/models/echo/lm.generate", json=body)
            r.raise_for_status()
            via_http.append(time.perf_counter() - t)
    base = statistics.median(in_process)
    return {
        "in_process_p50_ms": round(1000 * base, 3),
        "sax_client_p50_ms": round(1000 * statistics.median(via_client), 3),
        "raw_httpx_p50_ms": round(1000 * statistics.median(via_http), 3),
        "overhead_p50_ms_client": round(1000 * (statistics.median(via_client) - base), 3),
        "overhead_p50_ms_httpx": round(1000 * (statistics.median(via_http) - base), 3),
    }


@contextlib.asynccontextmanager
async def vllm_server_system(
    model_dir: Path, args: argparse.Namespace, work: Path, result: dict[str, Any]
) -> AsyncIterator[tuple[Modes, str]]:
    """vLLM's own OpenAI server on the same model (`--settings` engine flags); yields its modes
    and its URL."""
    port = free_port()
    log = work / "vllm_server.log"
    cmd = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_dir), "--served-model-name", "lm"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *vllm_engine_flags(args),
    ]
    result["vllm_server_cmd"] = " ".join(cmd[1:]).replace(str(model_dir), "MODEL_DIR")
    env = vllm_server_env()
    result["vllm_server_preload"] = "LD_PRELOAD" in env
    with process(cmd, log, env=env):
        start = time.perf_counter()
        wait_http(f"http://127.0.0.1:{port}/health", LOAD_WAIT_S, log)
        result["vllm_server_load_s"] = round(time.perf_counter() - start, 1)
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits
        ) as http:
            generate, generate_stream = openai_modes(http, args.tokens)
            url = f"http://127.0.0.1:{port}"
            yield {"vllm_server": generate, "vllm_server_stream": generate_stream}, url


# ---------------------------------------------------------------- prefix-sharing workload


Encode = Callable[[str], list[int]]  # a model's tokenizer: text -> token ids


def system_prompts(n: int, salt: int, min_tokens: int, encode: Encode) -> list[str]:
    """`n` distinct system prompts of at least `min_tokens` tokens each (counted with `encode`,
    the model's tokenizer); `salt` makes a fresh set."""
    out = []
    for i in range(n):
        head = f"[{salt}.{i}] You are an assistant. Context:"
        words: list[str] = []
        text = f"{head}\n"
        while len(encode(text)) < min_tokens:
            k = len(words)
            words += [WORDS[(i * 5 + (k + j) * 7 + salt * 11) % len(WORDS)] for j in range(8)]
            text = f"{head} {' '.join(words)}.\n"
        out.append(text)
    return out


# Tokens a system prompt runs past its whole blocks, so that its last block stays whole whatever
# question follows (a tokenizer may merge the prompt's last token with the next text).
SYSTEM_MARGIN_TOKENS = 8
QUESTION = "Question "


def question(i: int) -> str:
    return f"{QUESTION}{i}: what about the {WORDS[i % 20]}?"


@dataclass
class Tokens:
    """The model's tokenizer and KV block size, and what each system prompt made so far shares:
    its requests' common leading tokens, in whole blocks (the most vLLM's prefix cache can
    reuse)."""

    encode: Encode
    block_size: int
    shared: dict[str, int] = field(default_factory=dict)  # system prompt -> shared tokens

    def systems(self, n: int, salt: int, blocks: int) -> list[str]:
        """`n` fresh system prompts of `blocks` whole shared KV blocks each (or more)."""
        out = system_prompts(n, salt, blocks * self.block_size + SYSTEM_MARGIN_TOKENS, self.encode)
        for system in out:
            a, b = self.encode(system + question(0)), self.encode(system + question(1))
            pairs = enumerate(zip(a, b, strict=False))
            common = next((j for j, (x, y) in pairs if x != y), min(len(a), len(b)))
            self.shared[system] = common // self.block_size * self.block_size
        return out

    def ideal_hit_rates(self, events: list[tuple[str, float, float]]) -> dict[str, float]:
        """The prefix-cache hit rates a run's requests allow, from (prompt, sent, first token)
        per request, over all their prompt tokens: ``every_repeat`` if each request whose
        system prompt was sent before found its shared blocks cached (the ceiling: only the
        first use of a prompt must miss); ``after_first_token`` if only those sent after an
        earlier use had streamed its first token did (a floor for a perfect choice: by then
        that use's prefill is done; vLLM finds a prompt's blocks once it has scheduled them,
        which is sooner)."""
        total = every = after = 0
        seen: set[str] = set()
        first_token: dict[str, float] = {}
        for text, sent, first in sorted(events, key=lambda e: e[1]):
            total += len(self.encode(text))
            system = text.rpartition(QUESTION)[0]
            shared = self.shared.get(system, 0)
            if system in seen:
                every += shared
            if first_token.get(system, float("inf")) <= sent:
                after += shared
            seen.add(system)
            first_token[system] = min(first, first_token.get(system, float("inf")))
        return {
            "every_repeat": round(every / max(1, total), 3),
            "after_first_token": round(after / max(1, total), 3),
        }


def prefix_workload(n: int, systems: list[str], seed: int) -> list[str]:
    """`n` requests, each a system prompt and a short distinct question, in a seeded random
    order: in a fixed rotation, load-only choice alternates replicas in step with the rotation
    and lands repeats together by accident."""
    import random

    texts = [f"{systems[i % len(systems)]}{question(i)}" for i in range(n)]
    random.Random(seed).shuffle(texts)
    return texts


def long_distinct_prompts(n: int, salt: int) -> list[str]:
    """`n` prompts of over `PREFIX_CHARS` characters that differ from their first characters:
    each has a routing key of its own and shares no cached block with another."""
    from sax.client.picker import PREFIX_CHARS

    out = []
    for i, text in enumerate(prompts(n)):
        padded = f"[{salt}.{i}] {text}"
        while len(padded) < PREFIX_CHARS + 40:
            padded += f" Then a {WORDS[(i + len(padded)) % len(WORDS)]}."
        out.append(padded)
    return out


def _labels(line: str) -> dict[str, str]:
    import re

    inside = line[line.index("{") + 1 : line.rindex("}")]
    return dict(re.findall(r'(\w+)="([^"]*)"', inside))


async def engine_metrics(http: httpx.AsyncClient, urls: list[str], model: str) -> list[str]:
    """The ``vllm:`` sample lines for `model` (its ``model`` label) on the model servers'
    ``/metrics``."""
    lines = []
    for url in urls:
        text = (await http.get(f"{url}/metrics")).text
        lines += [
            line
            for line in text.splitlines()
            if line.startswith("vllm:") and "{" in line and _labels(line).get("model") == model
        ]
    return lines


async def prefix_cache_counters(
    http: httpx.AsyncClient, urls: list[str], model: str
) -> dict[str, float]:
    """Prompt tokens looked up in (``queries``) and found in (``hits``) the prefix cache, and
    requests preempted for want of KV blocks (``preemptions``): `model`'s counters summed over
    the model servers."""
    names = {
        "vllm:prefix_cache_queries_total{": "queries",
        "vllm:prefix_cache_hits_total{": "hits",
        "vllm:num_preemptions_total{": "preemptions",
    }
    out = dict.fromkeys(names.values(), 0.0)
    for line in await engine_metrics(http, urls, model):
        for prefix, name in names.items():
            if line.startswith(prefix):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


async def kv_cache_blocks(http: httpx.AsyncClient, urls: list[str], model: str) -> list[str]:
    """Each replica's KV cache as ``"BLOCKS x TOKENS"`` (vLLM's ``cache_config_info``)."""
    out = []
    for line in await engine_metrics(http, urls, model):
        if line.startswith("vllm:cache_config_info{"):
            labels = _labels(line)
            out.append(f"{labels.get('num_gpu_blocks')} x {labels.get('block_size')}")
    return out


PREFIX_ENGINE_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}


@dataclass
class PrefixWorkload:
    """One workload of the prefix bench: how it makes a run's prompts."""

    texts: Callable[[int, int], list[str]]  # (salt, round) -> the run's prompts


class SpillCounter:
    """Counts keyed requests and those the client placed off their home replica (spilled past
    the load bound), by wrapping the client's picker."""

    def __init__(self) -> None:
        self.keyed = 0
        self.spilled = 0

    def install(self) -> None:
        from sax.client import picker

        acquire = picker.PICKER.acquire

        def counting(addresses: Any, avoid: Any = (), key: str | None = None) -> str | None:
            choice = acquire(addresses, avoid, key)
            candidates = [a for a in addresses if a not in avoid] or list(addresses)
            if key is not None and choice is not None and len(candidates) > 1:
                self.keyed += 1
                self.spilled += choice != picker.home(key, candidates)
            return choice

        picker.PICKER.acquire = counting  # type: ignore[method-assign]

    def take(self) -> tuple[int, int]:
        """(keyed, spilled) since the last call."""
        out = (self.keyed, self.spilled)
        self.keyed = self.spilled = 0
        return out


def overflow_sizing(args: argparse.Namespace, tokens: Tokens, model_dir: Path) -> dict[str, Any]:
    """The small KV cache per replica for the ``overflow`` workload, from the engine's block size
    and the tokenizer's counts: room for the blocks of a replica's share of the in-flight
    requests beyond their shared prefix (`--concurrency` / 2 requests), plus `--overflow-share`
    of all the workload's shared prefix blocks. Under affinity each replica caches about half
    the prefixes, so with a share a bit over 1/2 they fit; under load-only choice every replica
    sees every prefix, and they do not. Returns the sizing, ``kv_cache_gib`` included."""
    from sax.models.vllm import kv_bytes_per_token

    bs = tokens.block_size
    # Salt 1000 is never sent (runs use 1001 and up): a sample of the workload's shape.
    systems = tokens.systems(args.overflow_system_prompts, 1000, args.system_blocks)
    n = args.overflow_system_prompts * args.overflow_uses
    texts = prefix_workload(n, systems, seed=0)
    prompt_tokens = [len(tokens.encode(t)) for t in texts]
    shared_blocks = min(tokens.shared[s] for s in systems) // bs
    request_blocks = math.ceil((max(prompt_tokens) + args.tokens) / bs)
    in_flight = math.ceil(args.concurrency / 2) * (request_blocks - shared_blocks)
    shared_total = len(systems) * shared_blocks
    # vLLM keeps one block of the pool as its null block: one more.
    blocks = in_flight + math.ceil(args.overflow_share * shared_total) + 1
    config = json.loads((model_dir / "config.json").read_text())
    block_bytes = bs * kv_bytes_per_token(config, 2)  # 16-bit KV, as vLLM-cpu keeps it
    return {
        "block_size": bs,
        "prompt_tokens_min_max": [min(prompt_tokens), max(prompt_tokens)],
        "shared_blocks_per_prompt": shared_blocks,
        "blocks_per_request": request_blocks,
        "in_flight_blocks": in_flight,
        "shared_blocks_total": shared_total,
        "share": args.overflow_share,
        "blocks_per_replica": blocks,
        "kv_cache_gib": round((blocks + 0.5) * block_bytes / (1 << 30), 6),
    }


async def bench_prefix(model_dir: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Prefix-affine vs load-only replica choice on two replicas (see the module docstring).

    Two phases on the same two model servers, so that each holds one engine at a time (on a
    small machine an idle engine still takes CPU from a busy one): the workloads on the model
    as published by default, then, unpublished, the ``overflow`` one on the small-KV copy.
    """
    from transformers import AutoTokenizer

    import sax.client as sax_client
    from sax.client import wire
    from sax.client.picker import prefix_key
    from sax.schemas import StreamChunk

    # vLLM-cpu binds each engine's threads to the first core and keeps the other for the rest
    # of the process, so two model servers on one host run both replicas on one core, where
    # one stalls while the other computes and load alone then sends nearly everything to the
    # other: a fight no two-host deployment has. One unbound thread per engine lets the OS give
    # each replica a core of its own.
    for name, value in PREFIX_ENGINE_ENV.items():
        os.environ.setdefault(name, value)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    result: dict[str, Any] = {
        "engine_env": {name: os.environ[name] for name in PREFIX_ENGINE_ENV},
        "overflow_system_prompts": args.overflow_system_prompts,
        "overflow_uses": args.overflow_uses,
        "distinct_requests": args.distinct_requests,
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    spills = SpillCounter()
    spills.install()

    # The choices compared: load alone, the client's prefix choice, and the prefix choice with
    # other picker settings (`--prefix-variants`) as ``prefix_<variant>``.
    from sax.client import picker

    settings = ("slack", "remember")
    defaults = {name: getattr(picker.PICKER, name) for name in settings}
    choices: list[tuple[str, dict[str, Any] | None]] = [("prefix", {}), ("load", None)]
    for variant in filter(None, args.prefix_variants.split(",")):
        if variant == "rendezvous":  # no memory: every keyed request by its rendezvous order
            choices.append((f"prefix_{variant}", {"remember": 0}))
        else:  # sN: the absolute load slack N
            choices.append((f"prefix_{variant}", {"slack": float(variant.removeprefix("s"))}))
    result["picker"] = defaults

    def mode(lm: Any, by_prefix: bool) -> Request:
        async def request(text: str) -> tuple[int, float | None]:
            deadline = lm.deadline(600)
            body = wire.generate_body(text, None, deadline.remaining())
            key = prefix_key(text) if by_prefix else None
            first: float | None = None
            async for item in lm.stream("lm.generate_stream", body, deadline, key):
                if isinstance(item, StreamChunk) and first is None:
                    first = time.perf_counter()
            return args.tokens, first

        return request

    async def phase(
        lm: Any,
        urls: list[str],
        http: httpx.AsyncClient,
        tokens: Tokens,
        workloads: dict[str, PrefixWorkload],
    ) -> None:
        model_id = str(lm.model_id)
        await load(mode(lm, False), prompts(args.concurrency), args.concurrency)  # warm up
        salt = 0
        for round_index in range(args.rounds):
            # The choices take turns going first (ABBA), so a drift in the CPU on offer favours
            # none.
            order = choices if round_index % 2 == 0 else choices[::-1]
            for name, workload in workloads.items():
                for label, overrides in order:
                    by_prefix = overrides is not None
                    for setting, value in (defaults | (overrides or {})).items():
                        setattr(picker.PICKER, setting, value)
                    salt += 1
                    texts = workload.texts(salt, round_index)
                    before = await prefix_cache_counters(http, urls, model_id)
                    spills.take()
                    run = await load(mode(lm, by_prefix), texts, args.concurrency)
                    after = await prefix_cache_counters(http, urls, model_id)
                    row = run.summary()
                    looked_up = max(1.0, after["queries"] - before["queries"])
                    row["prefix_cache_hit_rate"] = round(
                        (after["hits"] - before["hits"]) / looked_up, 3
                    )
                    row["preemptions"] = after["preemptions"] - before["preemptions"]
                    keyed, spilled = spills.take()
                    row["spilled"] = round(spilled / max(1, keyed), 3)
                    if name in ("shared", "overflow"):
                        ideal = tokens.ideal_hit_rates(run.events)
                        row["ideal_hit_rate"] = ideal["every_repeat"]
                        row["ideal_hit_rate_after_first_token"] = ideal["after_first_token"]
                    rows.setdefault(f"{name}_{label}", []).append(row)
        for setting, value in defaults.items():
            setattr(picker.PICKER, setting, value)

    async with (
        sax_system(model_dir, args, work, result, replicas=2) as cell,
        httpx.AsyncClient(timeout=30) as http,
    ):
        root = str(cell.root)
        lm_id = str(cell.lm.model_id)
        result["kv_cache"] = {"default": await kv_cache_blocks(http, cell.server_urls, lm_id)}
        block_size = int(result["kv_cache"]["default"][0].split(" x ")[1])
        tokens = Tokens(encode, block_size)

        def shared(salt: int, round_index: int) -> list[str]:
            systems = tokens.systems(args.system_prompts, salt, args.system_blocks)
            return prefix_workload(args.requests, systems, seed=round_index)

        def overflow(salt: int, round_index: int) -> list[str]:
            # Salts apart from the first phase's: no prompt repeats one sent before.
            systems = tokens.systems(args.overflow_system_prompts, 1000 + salt, args.system_blocks)
            n = args.overflow_system_prompts * args.overflow_uses
            return prefix_workload(n, systems, seed=round_index)

        sizing = overflow_sizing(args, tokens, model_dir)
        if args.overflow_kv_gib is not None:
            sizing["kv_cache_gib"] = args.overflow_kv_gib  # set by hand, not sized
        result["overflow_sizing"] = sizing
        sample = tokens.systems(1, 0, args.system_blocks)[0]
        result["system_prompt_tokens"] = len(encode(sample))
        result["system_prompt_shared_blocks"] = tokens.shared[sample] // block_size
        await phase(
            cell.lm,
            cell.server_urls,
            http,
            tokens,
            {
                "shared": PrefixWorkload(shared),
                "distinct": PrefixWorkload(
                    lambda salt, _: long_distinct_prompts(args.distinct_requests, salt)
                ),
                "distinct_short": PrefixWorkload(
                    lambda salt, _: [f"[{salt}] {t}" for t in prompts(args.distinct_requests)]
                ),
            },
        )
        # The same servable with a small KV cache, once the first is gone from both servers.
        await asyncio.to_thread(sax_client.unpublish, lm_id, sax_root=root)
        deadline = time.monotonic() + 120
        while await engine_metrics(http, cell.server_urls, lm_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lm_id} still loaded 120 s after unpublish")
            await asyncio.sleep(0.5)
        small_id = "/sax/bench/lm_small_kv"
        # A context of 512 tokens: vLLM refuses a KV cache smaller than one full context.
        overrides = sax_overrides(args) | {
            "kv_cache_gib": sizing["kv_cache_gib"],
            "max_model_len": MAX_MODEL_LEN,
        }
        servable, random_weights = SERVABLES[args.model]
        checkpoint = "None" if random_weights else str(model_dir)
        await asyncio.to_thread(
            sax_client.publish, small_id, servable, checkpoint, 2, overrides, sax_root=root
        )
        await asyncio.to_thread(sax_client.wait_for_ready, small_id, 2, 600, sax_root=root)
        result["kv_cache"]["overflow"] = await kv_cache_blocks(http, cell.server_urls, small_id)
        small = sax_client.AsyncModel(small_id, sax_root=root)
        await phase(small, cell.server_urls, http, tokens, {"overflow": PrefixWorkload(overflow)})

    for key, runs in rows.items():
        ranked = sorted(runs, key=lambda r: r["output_tokens_per_s"])
        result[key] = dict(ranked[len(ranked) // 2])  # the median round by throughput
        result[key]["rounds_hit_rate"] = [r["prefix_cache_hit_rate"] for r in runs]
        result[key]["rounds_ttft_p50_ms"] = [r.get("ttft_p50_ms") for r in runs]
        result[key]["rounds_tokens_per_s"] = [r["output_tokens_per_s"] for r in runs]
        result[key]["rounds_preemptions"] = [r["preemptions"] for r in runs]
        result[key]["rounds_spilled"] = [r["spilled"] for r in runs]
        if "ideal_hit_rate" in runs[0]:
            result[key]["rounds_ideal_hit_rate"] = [r["ideal_hit_rate"] for r in runs]

    def median_of(key: str, field_name: str) -> float:
        return float(statistics.median(r[field_name] for r in rows[key]))

    def ratio(workload: str, field_name: str, label: str = "prefix") -> float:
        load_side = median_of(f"{workload}_load", field_name)
        return round(median_of(f"{workload}_{label}", field_name) / max(1e-9, load_side), 3)

    def paired(workload: str, field_name: str, label: str = "prefix") -> list[float]:
        """Prefix / load per round: the runs of a round were back to back."""
        return [
            round(p[field_name] / max(1e-9, q[field_name]), 3)
            for p, q in zip(rows[f"{workload}_{label}"], rows[f"{workload}_load"], strict=True)
        ]

    ratios: dict[str, Any] = {}
    for label, _ in choices[2:]:
        for name in ("shared", "overflow"):
            ratios[f"{name}_hit_rate_{label}_vs_load"] = ratio(name, "prefix_cache_hit_rate", label)
            ratios[f"{name}_ttft_p50_{label}_vs_load"] = ratio(name, "ttft_p50_ms", label)
        for name in ("distinct", "distinct_short"):
            ratios[f"{name}_tokens_per_s_{label}_vs_load_paired_median"] = round(
                statistics.median(paired(name, "output_tokens_per_s", label)), 3
            )
    for name in ("shared", "overflow"):
        ratios[f"{name}_hit_rate_prefix_vs_load"] = ratio(name, "prefix_cache_hit_rate")
        ratios[f"{name}_hit_rate_prefix_vs_load_rounds"] = paired(name, "prefix_cache_hit_rate")
        ratios[f"{name}_ttft_p50_prefix_vs_load"] = ratio(name, "ttft_p50_ms")
        ratios[f"{name}_ttft_p50_prefix_vs_load_rounds"] = paired(name, "ttft_p50_ms")
        ratios[f"{name}_tokens_per_s_prefix_vs_load"] = ratio(name, "output_tokens_per_s")
        ratios[f"{name}_hit_rate_prefix_vs_ideal"] = round(
            median_of(f"{name}_prefix", "prefix_cache_hit_rate")
            / max(1e-9, median_of(f"{name}_prefix", "ideal_hit_rate")),
            3,
        )
    for name in ("distinct", "distinct_short"):
        per_round = paired(name, "output_tokens_per_s")
        ratios[f"{name}_tokens_per_s_prefix_vs_load"] = ratio(name, "output_tokens_per_s")
        ratios[f"{name}_tokens_per_s_prefix_vs_load_rounds"] = per_round
        ratios[f"{name}_tokens_per_s_prefix_vs_load_paired_median"] = round(
            statistics.median(per_round), 3
        )
    result["ratios"] = ratios
    return result


def offline_worker(model_dir: str, requests: int, tokens: int, sequential: int) -> None:
    """Runs in its own process: `LLM.generate` on every prompt at once, then one at a time."""
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model_dir,
        dtype=DTYPE,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory_bytes=int(KV_CACHE_GIB * (1 << 30)),
        enforce_eager=True,
        disable_log_stats=True,
    )
    params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0.0)
    texts = prompts(requests)
    llm.generate(texts[:8], params, use_tqdm=False)  # warm up
    start = time.perf_counter()
    outs = llm.generate(texts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    n_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    offline = {
        "requests": len(outs),
        "requests_per_s": round(len(outs) / wall, 2),
        "output_tokens_per_s": round(n_tokens / wall, 1),
    }
    latencies = []
    seq_tokens = 0
    start = time.perf_counter()
    for text in texts[:sequential]:
        t = time.perf_counter()
        [one] = llm.generate([text], params, use_tqdm=False)
        latencies.append(time.perf_counter() - t)
        seq_tokens += len(one.outputs[0].token_ids)
    wall = time.perf_counter() - start
    baseline = {
        "requests": sequential,
        "requests_per_s": round(sequential / wall, 2),
        "output_tokens_per_s": round(seq_tokens / wall, 1),
        "latency_p50_ms": ms(pct(latencies, 0.5)),
    }
    print("RESULT " + json.dumps({"offline": offline, "sequential": baseline}), flush=True)


def bench_offline(model_dir: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    log = work / "offline.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--offline-worker",
        str(model_dir),
        "--requests",
        str(args.requests),
        "--tokens",
        str(args.tokens),
        "--sequential",
        str(args.sequential),
    ]
    with process(cmd, log, env={"HF_HUB_OFFLINE": "1"}):
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("RESULT "):
                    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
                    return result
            time.sleep(0.5)
    raise TimeoutError(f"offline run gave no result; see {log}")


def model_dir_for(name: str) -> Path:
    """The model's directory: the weights, or for random-weight servables their config and
    tokenizer (vLLM's server then loads it with ``--load-format dummy``, as sax does)."""
    from sax.models import assets
    from sax.models.vllm import PublishedArchitecture
    from sax.server.registry import resolve
    from sax.server.servable import LoadSpec

    if name == "tiny":
        return assets.tiny_llama_dir()
    if name == "smollm2":
        return assets.smollm2_dir()
    path, _ = SERVABLES[name]
    servable = resolve(path)(LoadSpec("/sax/bench/lm", path, "None"))
    assert isinstance(servable, PublishedArchitecture), path
    return servable.default_model_dir()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = model_dir_for(args.model)
    work = Path(tempfile.mkdtemp(prefix="sax-bench-"))
    result: dict[str, Any] = {
        "bench": "data_plane",
        "model": args.model,
        "settings": args.settings,
        "workload": args.workload,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "output_tokens": args.tokens,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "logs": str(work),
    }
    if args.sax_override:
        result["sax_overrides"] = sax_overrides(args)
    if args.warmup is not None:
        result["warmup_requests"] = args.warmup
    if args.settings == "same":
        result |= {"dtype": DTYPE, "kv_cache_gib": KV_CACHE_GIB, "max_model_len": MAX_MODEL_LEN}
    if args.workload == "prefix":
        result |= {"system_prompts": args.system_prompts, "system_blocks": args.system_blocks}
        result.update(await bench_prefix(model_dir, args, work))
        return result
    # Both servers stay up and the modes alternate round by round: on a shared machine the CPU
    # available drifts over minutes, so back-to-back blocks would compare different machines.
    runs: dict[str, list[Run]] = {}

    async def measure(modes: Modes, metrics_urls: dict[str, str]) -> None:
        """`metrics_urls`: mode -> the URL of the server whose engine runs it."""
        if args.modes:
            modes = {name: fn for name, fn in modes.items() if name in args.modes.split(",")}
        warmup = args.concurrency if args.warmup is None else args.warmup
        for fn in modes.values():  # warm up
            if warmup > 0:
                await load(fn, prompts(warmup), args.concurrency)
        texts = prompts(args.requests)
        for _ in range(args.rounds):
            for name, fn in modes.items():
                run = await load(fn, texts, args.concurrency, metrics_urls.get(name))
                runs.setdefault(name, []).append(run)

    if args.one_system_at_a_time:  # models too large for two copies in memory
        result["one_system_at_a_time"] = "vllm_first" if args.vllm_first else "sax_first"

        async def sax_alone() -> None:
            async with sax_system(model_dir, args, work, result) as cell:
                await measure(cell.modes, dict.fromkeys(cell.modes, cell.server_urls[0]))

        async def vllm_alone() -> None:
            async with vllm_server_system(model_dir, args, work, result) as (vllm_modes, url):
                await measure(vllm_modes, dict.fromkeys(vllm_modes, url))

        for alone in (vllm_alone, sax_alone) if args.vllm_first else (sax_alone, vllm_alone):
            await alone()
    else:
        async with contextlib.AsyncExitStack() as stack:
            cell = await stack.enter_async_context(sax_system(model_dir, args, work, result))
            vllm_modes, url = await stack.enter_async_context(
                vllm_server_system(model_dir, args, work, result)
            )
            await measure(
                cell.modes | vllm_modes,
                dict.fromkeys(cell.modes, cell.server_urls[0]) | dict.fromkeys(vllm_modes, url),
            )
    for name, mode_runs in runs.items():
        ranked = sorted(mode_runs, key=lambda r: r.tokens / r.wall_s)
        result[name] = ranked[len(ranked) // 2].summary()  # the median round
        result[name]["rounds_tokens_per_s"] = [round(r.tokens / r.wall_s, 1) for r in mode_runs]
    if args.offline:  # last, alone: the servers are down by now
        result.update(bench_offline(model_dir, args, work))

    def ratio(a: str, b: str, field_name: str) -> float | None:
        if a not in result or b not in result or not result[b].get(field_name):
            return None
        return round(float(result[a][field_name]) / float(result[b][field_name]), 3)

    result["ratios"] = {
        f"{a}_vs_{b}_{f}": ratio(a, b, f)
        for a, b, f in [
            ("sax_openai", "vllm_server", "output_tokens_per_s"),
            ("sax_openai_stream", "vllm_server_stream", "output_tokens_per_s"),
            ("sax_openai_stream", "vllm_server_stream", "ttft_p50_ms"),
            ("sax_openai", "vllm_server", "latency_p50_ms"),
            ("sax_generate", "vllm_server", "output_tokens_per_s"),
            ("sax_generate_stream", "vllm_server_stream", "output_tokens_per_s"),
            ("sax_generate_stream", "vllm_server_stream", "ttft_p50_ms"),
            ("sax_generate", "offline", "output_tokens_per_s"),
        ]
        if ratio(a, b, f) is not None
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SERVABLES), default="smollm2")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    parser.add_argument(
        "--warmup",
        type=int,
        help="distinct workload: requests per mode before the measured rounds (default: "
        "--concurrency; a few suffice for a large model, whose engine compiled at load)",
    )
    parser.add_argument("--sequential", type=int, default=8, help="baseline requests")
    parser.add_argument("--overhead-calls", type=int, default=300)
    parser.add_argument("--settings", choices=["defaults", "same"], default="defaults")
    parser.add_argument("--workload", choices=["distinct", "prefix"], default="distinct")
    parser.add_argument("--modes", default="", help="comma-separated subset of the modes")
    parser.add_argument("--offline", action="store_true", help="also run offline vLLM")
    parser.add_argument(
        "--one-system-at-a-time",
        action="store_true",
        help="sax's rounds, then vLLM server's, each alone (models too large for two copies)",
    )
    parser.add_argument(
        "--sax-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more servable override for sax's publish (repeatable), e.g. max_num_seqs=128",
    )
    parser.add_argument(
        "--vllm-first",
        action="store_true",
        help="with --one-system-at-a-time: vLLM server's rounds first (a check on order effects)",
    )
    parser.add_argument("--system-prompts", type=int, default=8, help="prefix workload")
    parser.add_argument(
        "--system-blocks",
        type=int,
        default=2,
        help="prefix workload: whole KV blocks each system prompt shares (model's tokens)",
    )
    parser.add_argument(
        "--overflow-system-prompts", type=int, default=64, help="prefix workload, small KV cache"
    )
    parser.add_argument(
        "--overflow-uses", type=int, default=3, help="requests per system prompt, small KV cache"
    )
    parser.add_argument(
        "--overflow-share",
        type=float,
        default=0.6,
        help="small KV cache: the fraction of all shared prefix blocks one replica holds "
        "beyond its in-flight requests' own blocks",
    )
    parser.add_argument(
        "--overflow-kv-gib",
        type=float,
        default=None,
        help="KV cache per replica, small KV cache (default: sized, see --overflow-share)",
    )
    parser.add_argument(
        "--prefix-variants",
        default="",
        help="prefix workload: also the prefix choice with other picker settings, "
        "comma-separated: sN (load slack N), rendezvous (no memory of keys)",
    )
    parser.add_argument(
        "--distinct-requests", type=int, default=128, help="prefix workload, no shared prefix"
    )
    parser.add_argument("--offline-worker", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # SIGTERM unwinds like Ctrl-C, so the `process` blocks stop what they started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.offline_worker:
        offline_worker(args.offline_worker, args.requests, args.tokens, args.sequential)
        return
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
