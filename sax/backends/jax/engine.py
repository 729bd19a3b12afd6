"""The continuous-batching engine: KV-cache slots, bucketed compiled steps, one device thread.

Why it is shaped this way:

- **Static shapes, bounded compiles.** Every device call is an ahead-of-time compiled executable
  for one bucket: prefill over ``(prompt batch, prompt length)``, decode over ``(slot prefix,
  attention window)``, and the score/embed/gradient forwards over ``(batch, length)``. Buckets
  are powers of two, so the number of executables is bounded by `max_compiles` however varied
  the traffic is; `compile_count` says how many were built. `precompile` builds every
  generate bucket before the engine starts, so no request waits for XLA.
- **Slots and continuous batching.** The KV cache holds `num_slots` sequences. Between decode
  steps, waiting requests are prefilled into free slots and join the running batch; finished or
  cancelled sequences leave theirs. A short request submitted while a long one decodes therefore
  starts at the next step and finishes first. Free slots are handed out lowest-first so the
  decode step only runs over the prefix of slots in use.
- **Pipelining.** The sampled tokens stay on device and feed the next step, so step k+1 is
  dispatched before step k's tokens are copied to the host and detokenized. A sequence that
  stopped on EOS may thus run one wasted step; its result is discarded.
- **One device thread.** All device work (including score/embed/gradient jobs) runs on the
  engine's thread, never on the asyncio loop; results go back with
  ``loop.call_soon_threadsafe`` into each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import heapq
import queue
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sax.backends.jax import mesh as meshlib
from sax.backends.jax import model, sampling
from sax.backends.jax.config import ModelConfig
from sax.backends.jax.detok import TextStream
from sax.errors import Code, SaxError, invalid
from sax.generation import Sample, SamplingOptions, StreamItem


@dataclass(frozen=True)
class EngineConfig:
    num_slots: int = 8
    max_seq_len: int = 256
    min_bucket: int = 16  # smallest length bucket
    max_prefill_batch: int = 4
    topology: str = "1"


def buckets(lo: int, hi: int, midpoints: bool = False) -> tuple[int, ...]:
    """Powers of two from `lo` below `hi` (and their 1.5x midpoints when asked), then `hi`.

    Midpoints halve the padding a length bucket wastes (a 40-token prompt runs as 48, not 64)
    for twice the number of buckets.
    """
    out: list[int] = []
    b = lo
    while b < hi:
        out.append(b)
        if midpoints and b * 3 // 2 < hi and b % 2 == 0:
            out.append(b * 3 // 2)
        b *= 2
    return (*out, hi)


def fit(n: int, sizes: Sequence[int]) -> int:
    return next(s for s in sizes if s >= n)


@dataclass(frozen=True)
class Finished:
    samples: list[Sample]
    token_ids: list[list[int]]  # per sample, the sampled ids (EOS included when it stopped them)
    step: int  # `Engine.steps` when the request finished


Event = list[StreamItem] | Finished | BaseException


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    options: SamplingOptions
    ignore_eos: bool
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]
    seed: int
    seqs: list[_Seq] = field(default_factory=list)
    cancelled: bool = False

    def post(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the caller's loop has closed; nobody is listening
            pass


@dataclass(eq=False)
class _Seq:
    """One sample of a request, living in one cache slot."""

    req: _Request
    index: int
    stream: TextStream
    limit: int
    slot: int = -1
    dispatched: int = 0  # tokens whose production has been dispatched to the device
    num_tokens: int = 0
    ids: list[int] = field(default_factory=list)
    score: float = 0.0
    done: bool = False
    finish_reason: str = ""
    announced: bool = False  # the finishing item has been streamed

    @property
    def position(self) -> int:
        return len(self.req.prompt) + self.dispatched - 1

    def can_decode(self) -> bool:
        return not self.done and 0 < self.dispatched < self.limit


@dataclass
class _Dispatch:
    seqs: list[_Seq]
    rows: list[int]
    tokens: jax.Array
    logprobs: jax.Array


class RequestHandle:
    """The caller's side of one generate request: an async stream of item lists, then samples."""

    def __init__(self, engine: Engine, req: _Request) -> None:
        self._engine = engine
        self._req = req
        self.samples: list[Sample] = []
        self.token_ids: list[list[int]] = []
        self.finish_step: int | None = None  # `Engine.steps` when the engine finished it
        self.finished = False

    async def stream(self) -> AsyncIterator[list[StreamItem]]:
        while not self.finished:
            event = await self._req.queue.get()
            if isinstance(event, Finished):
                self.samples, self.token_ids = event.samples, event.token_ids
                self.finish_step = event.step
                self.finished = True
            elif isinstance(event, BaseException):
                self.finished = True
                raise event
            else:
                yield event

    async def result(self) -> list[Sample]:
        async for _ in self.stream():
            pass
        return self.samples

    def cancel(self) -> None:
        """Frees the request's slots (no-op once finished); safe from any thread."""
        if not self.finished:
            self.finished = True
            self._engine._inbox.put(("cancel", self._req))


class Engine:
    def __init__(
        self,
        cfg: ModelConfig,
        params: dict[str, Any],
        decode: Callable[[Sequence[int]], str],
        config: EngineConfig | None = None,
        eos_ids: Sequence[int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.config = config or EngineConfig()
        c = self.config
        if c.max_seq_len < 2 or c.num_slots < 1:
            raise ValueError("max_seq_len must be >= 2 and num_slots >= 1")
        self._decode_text = decode
        self._eos = frozenset(cfg.eos_token_ids if eos_ids is None else eos_ids)
        self.mesh = meshlib.make_mesh(c.topology)
        tp = self.mesh.size
        self._param_sh = meshlib.shardings(self.mesh, meshlib.param_specs(cfg, tp))
        self._cache_sh = meshlib.shardings(self.mesh, meshlib.cache_spec(cfg, tp))
        self._repl = meshlib.replicated(self.mesh)
        self.params = jax.device_put(params, self._param_sh)
        lo = min(c.min_bucket, c.max_seq_len)
        # Prompt lengths get fine buckets (prefill cost is proportional to the padded length);
        # decode attention windows get coarse ones (the weights, not the window, dominate a step).
        self.length_buckets = buckets(lo, c.max_seq_len, midpoints=True)
        self.window_buckets = buckets(lo, c.max_seq_len)
        self.batch_buckets = buckets(1, c.num_slots)
        self.prefill_buckets = buckets(1, min(c.max_prefill_batch, c.num_slots))
        self._compiled: dict[tuple[Any, ...], Any] = {}
        self._warmed: set[tuple[str, int, int]] = set()  # buckets `precompile` ran once
        self._alloc_state()
        # host-side per-slot step inputs
        s = c.num_slots
        self._ints = np.zeros((5, s), np.int32)  # position, top_k, seed, sample index, step
        self._floats = np.zeros((2, s), np.float32)  # temperature, top_p
        self._slots: list[_Seq | None] = [None] * s
        self._free = list(range(s))
        self._waiting: deque[_Request] = deque()
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._steps = 0
        self._died = ""  # why the engine thread ended on its own

    # ---------------------------------------------------------------- lifecycle

    def _alloc_state(self) -> None:
        c, cfg = self.config, self.cfg
        shape = (cfg.num_layers, c.num_slots, c.max_seq_len, cfg.num_kv_heads, cfg.head_dim)
        dtype = self.params["embed"].dtype
        zeros = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=self._cache_sh)
        self._cache_k, self._cache_v = zeros(), zeros()
        self._tokens = jax.device_put(np.zeros(c.num_slots, np.int32), self._repl)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jax-engine", daemon=True)
            self._thread.start()

    def dead_reason(self) -> str | None:
        """Why the engine thread ended although `stop` was not called; None while it runs."""
        thread = self._thread
        if thread is None or thread.is_alive():
            return None
        return f"the JAX engine thread ended: {self._died or 'no reason recorded'}"

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self._died = f"{type(exc).__name__}: {exc}"
            self._fail_all(SaxError(Code.UNAVAILABLE, f"the JAX engine died: {self._died}"))
            raise

    def stop(self) -> None:
        if self._thread is not None:
            self._inbox.put(("stop",))
            self._thread.join()
            self._thread = None

    @property
    def compile_count(self) -> int:
        return len(self._compiled)

    @property
    def warmed_buckets(self) -> frozenset[tuple[str, int, int]]:
        """The `generation_buckets` keys `precompile` ran once on dummy inputs."""
        return frozenset(self._warmed)

    @property
    def max_compiles(self) -> int:
        """Upper bound on `compile_count`: the number of buckets of every compiled function."""
        lengths, batches = len(self.length_buckets), len(self.batch_buckets)
        prefill = len(self.prefill_buckets) * lengths
        decode = batches * len(self.window_buckets)
        return prefill + decode + 2 * batches * lengths + lengths  # score, embed; gradient

    @property
    def steps(self) -> int:
        """Decode steps dispatched so far."""
        return self._steps

    def slots_in_use(self) -> int:
        return sum(s is not None for s in self._slots)

    # ---------------------------------------------------------------- public API (event loop)

    def submit(
        self, prompt: Sequence[int], options: SamplingOptions, *, ignore_eos: bool = False
    ) -> RequestHandle:
        """Queues a generate request; the caller iterates the handle for results."""
        prompt = list(prompt)
        if not prompt:
            raise invalid("the prompt has no tokens")
        if len(prompt) >= self.config.max_seq_len:
            raise invalid(
                f"the prompt has {len(prompt)} tokens; this model serves at most "
                f"{self.config.max_seq_len - 1}"
            )
        if options.num_samples > self.config.num_slots:
            raise invalid(f"num_samples {options.num_samples} exceeds {self.config.num_slots}")
        if self._thread is None:
            raise SaxError(Code.UNAVAILABLE, "the JAX engine is not running")
        seed = options.seed if options.seed is not None else secrets.randbits(31)
        req = _Request(
            prompt=prompt,
            options=options,
            ignore_eos=ignore_eos,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            seed=seed & 0x7FFFFFFF,
        )
        limit = min(options.max_decode_steps, self.config.max_seq_len - len(prompt))
        req.seqs = [
            _Seq(req, i, TextStream(self._decode_text, options.stop), limit)
            for i in range(options.num_samples)
        ]
        self._inbox.put(("submit", req))
        return RequestHandle(self, req)

    async def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[float]:
        """Summed log P(suffix | prefix) per ``(prefix ids, suffix ids)``; prefixes non-empty."""
        return await self._job(partial(self._score, [(list(p), list(s)) for p, s in pairs]))

    async def embed(self, tokens: Sequence[int]) -> list[float]:
        return await self._job(partial(self._embed, list(tokens)))

    async def gradient(
        self, prefix: Sequence[int], suffix: Sequence[int]
    ) -> tuple[float, np.ndarray]:
        """``(score, d score / d input embeddings [tokens, hidden])``."""
        return await self._job(partial(self._gradient, list(prefix), list(suffix)))

    async def _job(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None:
            raise SaxError(Code.UNAVAILABLE, "the JAX engine is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._inbox.put(("job", fn, loop, fut))
        return await fut

    # ---------------------------------------------------------------- compiled executables

    def _executable(
        self, key: tuple[Any, ...], fn: Callable[..., Any], args: tuple[Any, ...], **jit: Any
    ) -> Any:
        exe = self._compiled.get(key)
        if exe is None:
            exe = jax.jit(fn, **jit).lower(*args).compile()
            self._compiled[key] = exe
        return exe

    def generation_buckets(self) -> list[tuple[str, int, int]]:
        """The key of every executable a generate request can run: prefill over each (prompt
        batch, prompt length) bucket, decode over each (slot prefix, attention window)."""
        prefill = [("prefill", b, t) for b in self.prefill_buckets for t in self.length_buckets]
        decode = [("decode", b, w) for b in self.batch_buckets for w in self.window_buckets]
        return prefill + decode

    def precompile(self, workers: int = 1) -> Generator[tuple[int, int]]:
        """Compiles every `generation_buckets` executable on `workers` threads, then runs the
        ones a lone request reaches once; yields ``(done, total)`` steps as it goes.

        An executable's first run costs more than later ones: XLA resolves its kernels then,
        0.15-0.45 s per executable for SmolLM2 on a 2-core CPU, against 0.03-0.2 s for a
        single-prompt prefill's own run (bench/RESULTS.md). So each decode bucket and each
        single-prompt prefill bucket (one per length bucket) then runs once on dummy inputs:
        padding rows that write nowhere, zeros in slots no request holds yet. Prefills of
        several prompts at once, which only a burst of requests reaches and whose own time is
        longer, are compiled and left to their first use: running them all would add tens of
        seconds to every load.

        Called before `start` (the engine thread owns the state afterwards), so that no
        generate request waits for XLA. Closing the iterator early cancels the compiles not yet
        begun and returns once those running have finished. The arguments are built as the
        request path builds them, so requests find these executables. Score, embed and gradient
        still compile on first use: their buckets would double the count for methods that are
        rarely on a latency path.
        """
        if self._thread is not None:
            raise RuntimeError("precompile runs before the engine thread starts")
        keys = self.generation_buckets()
        runs = [key for key in keys if key[0] == "decode" or key[1] == 1]
        total = len(keys) + len(runs)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="jax-compile") as pool:
            futures = [pool.submit(self._warm_bucket, *key) for key in keys]
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    future.result()
                    yield done, total
            finally:
                for future in futures:
                    future.cancel()
        for done, key in enumerate(runs, len(keys) + 1):
            self._warm_bucket(*key, run=True)
            yield done, total

    def _warm_bucket(self, kind: str, nb: int, length: int, run: bool = False) -> None:
        if kind == "prefill":
            args = self._prefill_args(
                np.zeros((nb, length), np.int32),
                np.ones(nb, np.int32),
                np.full(nb, self.config.num_slots, np.int32),
                np.zeros((4, nb), np.int32),
                np.zeros((2, nb), np.float32),
            )
            exe = self._prefill_executable(args)
        else:
            # Positions at the window's end, so the first run goes through attention's loop
            # over cached chunks (slots no request holds yet; what it writes is never read).
            ints = np.zeros((5, nb), np.int32)
            ints[0] = length - 1
            args = self._decode_args(ints, np.zeros((2, nb), np.float32))
            exe = self._decode_executable(args, length)
        if run:
            self._cache_k, self._cache_v, self._tokens, *out = exe(*args)
            [np.asarray(x) for x in out]  # the host copy too, as `_process` makes it
            self._warmed.add((kind, nb, length))

    def _put(self, x: np.ndarray) -> jax.Array:
        return jax.device_put(x, self._repl)

    def _state_outs(self) -> tuple[Any, ...]:
        return (self._cache_sh, self._cache_sh, self._repl, self._repl, self._repl)

    def _prefill_fn(
        self,
        params: Any,
        cache_k: jax.Array,
        cache_v: jax.Array,
        tokens: jax.Array,
        prompt: jax.Array,
        lengths: jax.Array,
        slots: jax.Array,
        ints: jax.Array,
        floats: jax.Array,
    ) -> tuple[jax.Array, ...]:
        t = prompt.shape[1]
        logits, ks, vs = model.prefill(params, prompt, lengths, self.cfg)
        where = (slots[:, None], jnp.arange(t)[None, :])
        cache_k = cache_k.at[:, where[0], where[1]].set(ks, mode="drop")
        cache_v = cache_v.at[:, where[0], where[1]].set(vs, mode="drop")
        first, logp = sampling.sample(
            logits, floats[0], ints[0], floats[1], ints[1], ints[2], ints[3]
        )
        tokens = tokens.at[slots].set(first, mode="drop")
        return cache_k, cache_v, tokens, first, logp

    def _decode_fn(
        self,
        params: Any,
        cache_k: jax.Array,
        cache_v: jax.Array,
        tokens: jax.Array,
        ints: jax.Array,
        floats: jax.Array,
        *,
        window: int,
    ) -> tuple[jax.Array, ...]:
        nb = ints.shape[1]
        pos = ints[0]
        logits, ks, vs = model.decode(params, cache_k, cache_v, tokens[:nb], pos, self.cfg, window)
        rows = jnp.arange(nb)
        cache_k = cache_k.at[:, rows, pos].set(ks)
        cache_v = cache_v.at[:, rows, pos].set(vs)
        nxt, logp = sampling.sample(
            logits, floats[0], ints[1], floats[1], ints[2], ints[3], ints[4]
        )
        return cache_k, cache_v, tokens.at[:nb].set(nxt), nxt, logp

    # ---------------------------------------------------------------- engine thread

    def _loop(self) -> None:
        pending: deque[_Dispatch] = deque()
        while True:
            busy = bool(self._waiting or pending or any(s is not None for s in self._slots))
            if not self._drain(block=not busy):
                return
            try:
                dispatched = self._dispatch(pending)
                while len(pending) > (1 if dispatched else 0):
                    self._process(pending.popleft())
            except Exception as exc:  # a failed device step fails every request it touched
                pending.clear()
                self._fail_all(exc)

    def _drain(self, block: bool) -> bool:
        """Handles inbox commands; False when asked to stop."""
        while True:
            try:
                cmd = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            kind = cmd[0]
            if kind == "stop":
                self._fail_all(SaxError(Code.UNAVAILABLE, "the JAX engine stopped"))
                return False
            if kind == "submit":
                self._waiting.append(cmd[1])
            elif kind == "cancel":
                self._cancel(cmd[1])
            elif kind == "job":
                self._run_job(*cmd[1:])

    def _run_job(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]
    ) -> None:
        def deliver(ok: bool, value: Any) -> None:
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        try:
            result, ok = fn(), True
        except Exception as exc:
            result, ok = exc, False
        try:
            loop.call_soon_threadsafe(deliver, ok, result)
        except RuntimeError:
            pass

    def _dispatch(self, pending: deque[_Dispatch]) -> bool:
        dispatched = False
        admitted: list[_Seq] = []
        while self._waiting and len(self._free) >= len(self._waiting[0].seqs):
            req = self._waiting.popleft()
            for seq in req.seqs:
                self._assign(seq, heapq.heappop(self._free))
            admitted.extend(req.seqs)
        step = self.prefill_buckets[-1]
        for i in range(0, len(admitted), step):
            pending.append(self._prefill(admitted[i : i + step]))
            dispatched = True
        active = [s for s in self._slots if s is not None and s.can_decode()]
        if active:
            pending.append(self._decode_step(active))
            dispatched = True
        return dispatched

    def _assign(self, seq: _Seq, slot: int) -> None:
        o = seq.req.options
        seq.slot = slot
        self._slots[slot] = seq
        self._ints[:, slot] = (0, o.top_k, seq.req.seed, seq.index, 0)
        self._floats[:, slot] = (o.temperature, o.top_p)

    def _release(self, seq: _Seq) -> None:
        if seq.slot >= 0 and self._slots[seq.slot] is seq:
            self._slots[seq.slot] = None
            self._ints[:, seq.slot] = 0
            self._floats[:, seq.slot] = 0.0
            heapq.heappush(self._free, seq.slot)
        seq.slot = -1

    def _prefill(self, seqs: list[_Seq]) -> _Dispatch:
        nb = fit(len(seqs), self.prefill_buckets)
        t = fit(max(len(s.req.prompt) for s in seqs), self.length_buckets)
        prompt = np.zeros((nb, t), np.int32)
        lengths = np.ones(nb, np.int32)
        slots = np.full(nb, self.config.num_slots, np.int32)  # padding rows write nowhere
        ints = np.zeros((4, nb), np.int32)
        floats = np.zeros((2, nb), np.float32)
        for row, seq in enumerate(seqs):
            p = seq.req.prompt
            prompt[row, : len(p)] = p
            lengths[row] = len(p)
            slots[row] = seq.slot
            ints[:, row] = self._ints[1:, seq.slot]
            floats[:, row] = self._floats[:, seq.slot]
            seq.dispatched = 1
        args = self._prefill_args(prompt, lengths, slots, ints, floats)
        exe = self._prefill_executable(args)
        self._cache_k, self._cache_v, self._tokens, first, logp = exe(*args)
        return _Dispatch(seqs, list(range(len(seqs))), first, logp)

    def _prefill_args(self, *host: np.ndarray) -> tuple[Any, ...]:
        """``(prompt, lengths, slots, ints, floats)`` -> the prefill executable's arguments."""
        state = (self.params, self._cache_k, self._cache_v, self._tokens)
        return (*state, *(self._put(a) for a in host))

    def _prefill_executable(self, args: tuple[Any, ...]) -> Any:
        nb, t = args[4].shape
        return self._executable(
            ("prefill", nb, t),
            self._prefill_fn,
            args,
            donate_argnums=(1, 2, 3),
            out_shardings=self._state_outs(),
        )

    def _decode_step(self, active: list[_Seq]) -> _Dispatch:
        nb = fit(max(s.slot for s in active) + 1, self.batch_buckets)
        window = fit(max(s.position for s in active), self.window_buckets)
        for seq in active:
            self._ints[0, seq.slot] = seq.position
            self._ints[4, seq.slot] = seq.dispatched
            seq.dispatched += 1
        args = self._decode_args(self._ints[:, :nb].copy(), self._floats[:, :nb].copy())
        exe = self._decode_executable(args, window)
        self._cache_k, self._cache_v, self._tokens, nxt, logp = exe(*args)
        self._steps += 1
        return _Dispatch(active, [s.slot for s in active], nxt, logp)

    def _decode_args(self, ints: np.ndarray, floats: np.ndarray) -> tuple[Any, ...]:
        state = (self.params, self._cache_k, self._cache_v, self._tokens)
        return (*state, self._put(ints), self._put(floats))

    def _decode_executable(self, args: tuple[Any, ...], window: int) -> Any:
        return self._executable(
            ("decode", args[4].shape[1], window),
            partial(self._decode_fn, window=window),
            args,
            donate_argnums=(1, 2, 3),
            out_shardings=self._state_outs(),
        )

    def _process(self, d: _Dispatch) -> None:
        tokens, logprobs = np.asarray(d.tokens), np.asarray(d.logprobs)
        touched: dict[int, _Request] = {}
        for seq, row in zip(d.seqs, d.rows, strict=True):
            if seq.done:
                continue
            self._accept(seq, int(tokens[row]), float(logprobs[row]))
            touched[id(seq.req)] = seq.req
        for req in touched.values():
            self._publish(req)

    def _accept(self, seq: _Seq, token: int, logprob: float) -> None:
        seq.num_tokens += 1
        seq.ids.append(token)
        seq.score += logprob
        if token in self._eos and not seq.req.ignore_eos:
            self._finish(seq, "stop")
            return
        seq.stream.push(token)
        if seq.stream.stopped:
            self._finish(seq, "stop")
        elif seq.num_tokens >= seq.limit:
            self._finish(seq, "length")

    def _finish(self, seq: _Seq, reason: str) -> None:
        seq.done, seq.finish_reason = True, reason
        seq.stream.flush()
        self._release(seq)

    def _publish(self, req: _Request) -> None:
        items = []
        for seq in req.seqs:
            start = seq.stream.emitted
            delta = seq.stream.take(final=seq.done)
            if delta or (seq.done and not seq.announced):
                seq.announced = seq.done
                items.append(
                    StreamItem(
                        index=seq.index,
                        text=delta,
                        prefix_len=start,
                        score=seq.score,
                        num_tokens=len(seq.ids),
                    )
                )
        if items:
            req.post(items)
        if all(s.done for s in req.seqs):
            samples = [self._sample(s) for s in req.seqs]
            req.post(Finished(samples, [s.ids for s in req.seqs], self._steps))

    @staticmethod
    def _sample(seq: _Seq) -> Sample:
        return Sample(
            text=seq.stream.text,
            score=seq.score,
            num_tokens=seq.num_tokens,
            finish_reason=seq.finish_reason,
        )

    def _cancel(self, req: _Request) -> None:
        req.cancelled = True
        if req in self._waiting:
            self._waiting.remove(req)
        for seq in req.seqs:
            if not seq.done:
                seq.done, seq.finish_reason = True, "cancelled"
                self._release(seq)

    def _fail_all(self, exc: BaseException) -> None:
        reqs = {id(s.req): s.req for s in self._slots if s is not None}
        reqs.update({id(r): r for r in self._waiting})
        self._waiting.clear()
        for req in reqs.values():
            for seq in req.seqs:
                seq.done = True
                self._release(seq)
            req.post(exc)
        if any(a.is_deleted() for a in (self._cache_k, self._cache_v, self._tokens)):
            self._alloc_state()

    # ---------------------------------------------------------------- forward-only jobs

    def _rows(self, seqs: list[list[int]]) -> tuple[int, int]:
        longest = max(len(s) for s in seqs)
        if longest > self.config.max_seq_len:
            raise invalid(
                f"the input has {longest} tokens; this model serves at most "
                f"{self.config.max_seq_len}"
            )
        return fit(len(seqs), self.batch_buckets), fit(longest, self.length_buckets)

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        out: list[float] = []
        step = self.batch_buckets[-1]
        for i in range(0, len(pairs), step):
            chunk = pairs[i : i + step]
            seqs = [p + s for p, s in chunk]
            nb, t = self._rows(seqs)
            tokens = np.zeros((nb, t), np.int32)
            starts = np.ones(nb, np.int32)
            ends = np.ones(nb, np.int32)
            for row, ((prefix, _), ids) in enumerate(zip(chunk, seqs, strict=True)):
                tokens[row, : len(ids)] = ids
                starts[row], ends[row] = len(prefix), len(ids)
            args = (self.params, *(self._put(a) for a in (tokens, starts, ends)))
            exe = self._executable(("score", nb, t), self._score_fn, args)
            out.extend(float(x) for x in np.asarray(exe(*args))[: len(chunk)])
        return out

    def _score_fn(
        self, params: Any, tokens: jax.Array, starts: jax.Array, ends: jax.Array
    ) -> jax.Array:
        embeds = model.embed_tokens(params, tokens)
        return model.suffix_logprob(params, embeds, tokens, starts, ends, self.cfg)

    def _embed(self, tokens: list[int]) -> list[float]:
        nb, t = self._rows([tokens])
        padded = np.zeros((nb, t), np.int32)
        padded[0, : len(tokens)] = tokens
        lengths = np.ones(nb, np.int32)
        lengths[0] = len(tokens)
        args = (self.params, self._put(padded), self._put(lengths))
        exe = self._executable(("embed", nb, t), partial(model.mean_embedding, cfg=self.cfg), args)
        return [float(x) for x in np.asarray(exe(*args))[0]]

    def _gradient(self, prefix: list[int], suffix: list[int]) -> tuple[float, np.ndarray]:
        ids = prefix + suffix
        _, t = self._rows([ids])
        tokens = np.zeros((1, t), np.int32)
        tokens[0, : len(ids)] = ids
        bounds = np.array([len(prefix)], np.int32), np.array([len(ids)], np.int32)
        args = (self.params, self._put(tokens), *(self._put(b) for b in bounds))
        exe = self._executable(("gradient", t), self._gradient_fn, args)
        score, grad = exe(*args)
        return float(score), np.asarray(grad)[0, : len(ids)]

    def _gradient_fn(
        self, params: Any, tokens: jax.Array, starts: jax.Array, ends: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        def total(embeds: jax.Array) -> jax.Array:
            return model.suffix_logprob(params, embeds, tokens, starts, ends, self.cfg).sum()

        return jax.value_and_grad(total)(model.embed_tokens(params, tokens))
