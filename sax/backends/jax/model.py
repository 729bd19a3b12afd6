"""The Llama-family decoder as pure functions over a parameter pytree.

RMSNorm, rotary position embeddings (HF "rotate half" layout, so HF q/k weights load as-is),
grouped-query attention and a SwiGLU MLP. Layers run under `jax.lax.scan`, each step a
`jax.lax.switch` whose branch reads its own layer's separate weights in place: scanning over
stacked weights would copy every layer's slice of them on each call (XLA on CPU materializes
the slice), and unrolling the layers ran decode steps 1.6x slower on CPU. Three entry points
share one layer body:

- `forward`: whole sequences from input embeddings (score, embed, gradient, reference checks);
- `prefill`: a batch of prompts, returning the last position's hidden state and every layer's
  keys/values for the engine to insert into its KV cache;
- `decode`: one token per cache slot, attending over the cached positions each slot has.

Attention takes key/value blocks and combines them in one softmax, so decode attends over the
cache and the current token without first copying the token into the cache.

A float32 model multiplies in float32 on every platform: XLA's default on GPU (TF32) and TPU
(one bfloat16 pass) would round its matmul inputs to 10 or 8 mantissa bits, and its scores and
logits would drift from the checkpoint's by 1e-3 relative. Lower-precision weights keep the
platform's default.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
from jax import Array

from sax.backends.jax.config import ModelConfig

Params = dict[str, Any]
_NEG = -1e30
_P = ParamSpec("_P")
_R = TypeVar("_R")
_Y = TypeVar("_Y")


def matmul_precision(params: Params) -> contextlib.AbstractContextManager[Any]:
    """The matmul precision `params` are run at: exact float32 for float32 weights."""
    if params["embed"].dtype == jnp.float32:
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def _at_weights_precision(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs (or traces) `fn` at `matmul_precision` of its first argument, the parameters."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        params: Params = args[0]  # type: ignore[assignment]
        with matmul_precision(params):
            return fn(*args, **kwargs)

    return wrapper


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (weight * normed).astype(x.dtype)


@functools.cache
def _inv_freq(cfg: ModelConfig) -> tuple[float, ...]:
    return tuple(cfg.rope_frequencies())


def rope(x: Array, positions: Array, cfg: ModelConfig) -> Array:
    """Rotates ``x [B, T, heads, head_dim]`` by ``positions [B, T]``."""
    inv = jnp.asarray(_inv_freq(cfg), jnp.float32)
    freqs = positions[..., None].astype(jnp.float32) * inv
    cos = jnp.cos(freqs)[:, :, None, :]
    sin = jnp.sin(freqs)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attend(q: Array, blocks: list[tuple[Array, Array, Array]], cfg: ModelConfig) -> Array:
    """Grouped-query attention of ``q [B, T, H, hd]`` over key/value blocks in one softmax.

    Each block is ``(k [B, S, KV, hd], v [B, S, KV, hd], mask [B, T, S])``; the result is
    ``[B, T, H * hd]``. Every query row must see at least one key across the blocks.
    """
    b, t, h, hd = q.shape
    kv = cfg.num_kv_heads
    qg = q.reshape(b, t, kv, h // kv, hd).astype(jnp.float32) * (hd**-0.5)
    scores = []
    for k, _, mask in blocks:
        s = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32))
        scores.append(jnp.where(mask[:, None, None], s, _NEG))
    peak = functools.reduce(jnp.maximum, [s.max(axis=-1, keepdims=True) for s in scores])
    total = jnp.zeros_like(peak)
    out = jnp.zeros((b, kv, h // kv, t, hd), jnp.float32)
    for s, (_, v, mask) in zip(scores, blocks, strict=True):
        p = jnp.where(mask[:, None, None], jnp.exp(s - peak), 0.0)
        total = total + p.sum(axis=-1, keepdims=True)
        out = out + jnp.einsum("bkgts,bskd->bkgtd", p, v.astype(jnp.float32))
    out = out / total
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h * hd).astype(q.dtype)


def _qkv(lp: Params, x: Array, positions: Array, cfg: ModelConfig) -> tuple[Array, Array, Array]:
    b, t, _ = x.shape
    hd = cfg.head_dim
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    q = (h @ lp["wq"]).reshape(b, t, cfg.num_heads, hd)
    k = (h @ lp["wk"]).reshape(b, t, cfg.num_kv_heads, hd)
    v = (h @ lp["wv"]).reshape(b, t, cfg.num_kv_heads, hd)
    return rope(q, positions, cfg), rope(k, positions, cfg), v


def _finish_layer(lp: Params, x: Array, attn: Array, cfg: ModelConfig) -> Array:
    x = x + attn @ lp["wo"]
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    return x + (jax.nn.silu(h @ lp["w_gate"]) * (h @ lp["w_up"])) @ lp["w_down"]


def _causal_mask(lengths: Array, t: int) -> Array:
    """``[B, T, T]``: query i sees key j when j <= i and j is a real (unpadded) token."""
    idx = jnp.arange(t)
    causal = idx[None, :, None] >= idx[None, None, :]
    return causal & (idx[None, None, :] < lengths[:, None, None])


def lm_head(params: Params, hidden: Array) -> Array:
    head = params["lm_head"] if "lm_head" in params else params["embed"].T
    return (hidden @ head).astype(jnp.float32)


def _scan_layers(
    params: Params, x: Array, layer: Callable[[Params, Array, int], tuple[Array, _Y]]
) -> tuple[Array, _Y]:
    """Runs ``layer(weights, x, index) -> (x, y)`` over every layer; returns the last ``x`` and
    the ``y`` stacked along a leading layer axis.

    One scan step per layer; its `jax.lax.switch` branch takes all layers' weights as operands
    (passed by reference, not copied) and uses its own layer's.
    """
    layers = params["layers"]

    def branch(i: int) -> Callable[[Array, list[Params]], tuple[Array, _Y]]:
        return lambda h, weights: layer(weights[i], h, i)

    branches = [branch(i) for i in range(len(layers))]

    def body(h: Array, i: Array) -> tuple[Array, _Y]:
        return jax.lax.switch(i, branches, h, layers)

    return jax.lax.scan(body, x, jnp.arange(len(layers)))


def _run_layers(
    params: Params, x: Array, positions: Array, mask: Array, cfg: ModelConfig
) -> tuple[Array, tuple[Array, Array]]:
    def layer(lp: Params, h: Array, _: int) -> tuple[Array, tuple[Array, Array]]:
        q, k, v = _qkv(lp, h, positions, cfg)
        attn = attend(q, [(k, v, mask)], cfg)
        return _finish_layer(lp, h, attn, cfg), (k, v)

    return _scan_layers(params, x, layer)


@_at_weights_precision
def forward(params: Params, embeds: Array, lengths: Array, cfg: ModelConfig) -> Array:
    """Final-normed hidden states ``[B, T, D]`` of right-padded input embeddings."""
    b, t, _ = embeds.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x, _ = _run_layers(params, embeds, positions, _causal_mask(lengths, t), cfg)
    return rms_norm(x, params["final_norm"], cfg.rms_norm_eps)


def embed_tokens(params: Params, tokens: Array) -> Array:
    return params["embed"][tokens]


@_at_weights_precision
def logits(params: Params, tokens: Array, cfg: ModelConfig) -> Array:
    """``[B, T, V]`` float32 logits of unpadded token ids (reference checks)."""
    b, t = tokens.shape
    hidden = forward(params, embed_tokens(params, tokens), jnp.full((b,), t), cfg)
    return lm_head(params, hidden)


@_at_weights_precision
def prefill(
    params: Params, tokens: Array, lengths: Array, cfg: ModelConfig
) -> tuple[Array, Array, Array]:
    """Runs right-padded prompts ``[B, T]``.

    Returns the last real position's logits ``[B, V]`` and keys/values ``[L, B, T, KV, hd]``.
    """
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x, (ks, vs) = _run_layers(
        params, embed_tokens(params, tokens), positions, _causal_mask(lengths, t), cfg
    )
    last = x[jnp.arange(b), lengths - 1]
    last = rms_norm(last, params["final_norm"], cfg.rms_norm_eps)
    return lm_head(params, last), ks, vs


DECODE_CHUNK = 32  # cached keys per step of decode attention's loop


@_at_weights_precision
def decode(
    params: Params,
    cache_k: Array,
    cache_v: Array,
    tokens: Array,
    positions: Array,
    cfg: ModelConfig,
    window: int,
) -> tuple[Array, Array, Array]:
    """One step for the first ``B = tokens.shape[0]`` cache slots.

    ``cache_k/v [L, slots, max_len, KV, hd]``; slot b attends to its cached positions below
    ``positions[b]`` (all within the first `window`) and to itself. Returns logits ``[B, V]`` and
    the new keys/values ``[L, B, KV, hd]`` for the caller to write at ``positions``.

    Attention reads the cache in chunks of `DECODE_CHUNK` positions up to the longest live
    sequence (``max(positions)``), not the whole window, so a step costs what the batch has
    cached; the window only bounds the loop.
    """
    pos2 = positions[:, None]
    x = embed_tokens(params, tokens)[:, None, :]
    chunk = min(DECODE_CHUNK, window)
    chunks = (jnp.max(positions) + chunk - 1) // chunk

    def layer(lp: Params, h: Array, index: int) -> tuple[Array, tuple[Array, Array]]:
        q, k, v = _qkv(lp, h, pos2, cfg)
        caches = (cache_k, cache_v)
        attn = _attend_cached(q, k, v, caches, index, positions, chunks, chunk, window, cfg)
        return _finish_layer(lp, h, attn, cfg), (k[:, 0], v[:, 0])

    x, (ks, vs) = _scan_layers(params, x, layer)
    hidden = rms_norm(x[:, 0], params["final_norm"], cfg.rms_norm_eps)
    return lm_head(params, hidden), ks, vs


def _attend_cached(
    q: Array,
    k: Array,
    v: Array,
    caches: tuple[Array, Array],
    layer: int,
    positions: Array,
    chunks: Array,
    chunk: int,
    window: int,
    cfg: ModelConfig,
) -> Array:
    """Decode attention of ``q [B, 1, H, hd]`` over the token's own ``k, v [B, 1, KV, hd]`` and
    the cached positions below ``positions [B]`` of `layer`, `chunks` chunks of `chunk` keys at a
    time with a running (online) softmax; returns ``[B, 1, H * hd]``.

    The chunks are sliced straight out of the whole cache ``[L, slots, max_len, KV, hd]``, so no
    layer's cache is copied first. A last chunk that would run past `window` starts earlier
    instead, and the keys it shares with the previous chunk are masked out.
    """
    b, _, h, hd = q.shape
    kv = cfg.num_kv_heads
    qg = q.reshape(b, kv, h // kv, hd).astype(jnp.float32) * (hd**-0.5)
    own_k, own_v = k[:, 0].astype(jnp.float32), v[:, 0].astype(jnp.float32)
    # The token itself starts the running softmax: its score is the running peak, weight 1.
    peak = jnp.einsum("bkgd,bkd->bkg", qg, own_k)[..., None]
    total = jnp.ones_like(peak)
    out = jnp.broadcast_to(own_v[:, :, None, :], (b, kv, h // kv, hd))
    zero = jnp.zeros((), jnp.int32)

    def step(i: Array, carry: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        peak, total, out = carry
        first = i * chunk
        start = jnp.minimum(first, window - chunk)
        at = (layer, zero, start, zero, zero)
        size = (1, b, chunk, kv, hd)
        ck = jax.lax.dynamic_slice(caches[0], at, size)[0].astype(jnp.float32)
        cv = jax.lax.dynamic_slice(caches[1], at, size)[0].astype(jnp.float32)
        keys = start + jnp.arange(chunk)
        mask = (keys[None, :] < positions[:, None]) & (keys[None, :] >= first)
        s = jnp.einsum("bkgd,bskd->bkgs", qg, ck)
        s = jnp.where(mask[:, None, None], s, _NEG)
        new_peak = jnp.maximum(peak, s.max(axis=-1, keepdims=True))
        scale = jnp.exp(peak - new_peak)
        p = jnp.where(mask[:, None, None], jnp.exp(s - new_peak), 0.0)
        total = total * scale + p.sum(axis=-1, keepdims=True)
        out = out * scale + jnp.einsum("bkgs,bskd->bkgd", p, cv)
        return new_peak, total, out

    _, total, out = jax.lax.fori_loop(0, chunks, step, (peak, total, out))
    return (out / total).reshape(b, 1, h * hd).astype(q.dtype)


@_at_weights_precision
def suffix_logprob(
    params: Params, embeds: Array, tokens: Array, starts: Array, ends: Array, cfg: ModelConfig
) -> Array:
    """``[B]``: summed log P(tokens[b, starts[b]:ends[b]] | the tokens before them).

    Takes input embeddings (not ids) so that `jax.grad` can differentiate with respect to them.
    """
    hidden = forward(params, embeds, ends, cfg)
    logp = jax.nn.log_softmax(lm_head(params, hidden[:, :-1]), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    target = jnp.arange(1, tokens.shape[1])[None, :]
    mask = (target >= starts[:, None]) & (target < ends[:, None])
    return jnp.sum(jnp.where(mask, picked, 0.0), axis=-1)


@_at_weights_precision
def mean_embedding(params: Params, tokens: Array, lengths: Array, cfg: ModelConfig) -> Array:
    """``[B, D]``: final hidden states averaged over the real tokens, then L2-normalized."""
    hidden = forward(params, embed_tokens(params, tokens), lengths, cfg).astype(jnp.float32)
    mask = (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None])[..., None]
    mean = jnp.sum(hidden * mask, axis=1) / lengths[:, None]
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
