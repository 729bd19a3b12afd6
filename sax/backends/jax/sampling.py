"""On-device token choice with per-row settings, so one compiled step serves mixed requests.

Each row carries its own temperature (0 = greedy), top-k (0 = off), top-p (1 = off) and random
key. Keys are derived, not stored: ``fold_in(fold_in(key(seed), sample_index), step)``, so a
request's samples are reproducible from its seed no matter which slot or batch they run in.
The returned log-prob is the model's own (temperature 1, unfiltered) log-probability of the
chosen token, which is what scores sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def _filter(x: Array, top_k: Array, top_p: Array) -> Array:
    """Masks ``x [B, V]`` outside each row's top-k, then outside its top-p nucleus."""
    v = x.shape[-1]
    ordered = -jnp.sort(-x, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    kth = jnp.take_along_axis(ordered, (k - 1)[:, None], axis=-1)
    ordered = jnp.where(jnp.arange(v)[None, :] < k[:, None], ordered, -jnp.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
    keep = (before < top_p[:, None]) | (top_p[:, None] >= 1.0)
    floor = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
    floor = jnp.maximum(floor, kth)
    return jnp.where(x >= floor, x, -jnp.inf)


def _keys(seeds: Array, sample_ids: Array, steps: Array) -> Array:
    def one(seed: Array, sample: Array, step: Array) -> Array:
        key = jax.random.PRNGKey(seed.astype(jnp.uint32))
        return jax.random.fold_in(jax.random.fold_in(key, sample), step)

    return jax.vmap(one)(seeds, sample_ids, steps)


def sample(
    logits: Array,
    temperature: Array,
    top_k: Array,
    top_p: Array,
    seeds: Array,
    sample_ids: Array,
    steps: Array,
) -> tuple[Array, Array]:
    """Picks one token per row of ``logits [B, V]``; returns ``(tokens [B], logprobs [B])``."""
    greedy = argmax(logits)

    def stochastic() -> Array:
        x = logits / jnp.maximum(temperature, 1e-6)[:, None]
        needs_filter = jnp.any((top_k > 0) | (top_p < 1.0))
        x = jax.lax.cond(needs_filter, _filter, lambda x, _k, _p: x, x, top_k, top_p)
        keys = _keys(seeds, sample_ids, steps)
        drawn = jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    tokens = jax.lax.cond(jnp.all(temperature <= 0), lambda: greedy, stochastic)
    picked = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
    return tokens, picked - jax.nn.logsumexp(logits, axis=-1)


def argmax(x: Array) -> Array:
    """``[B]`` int32: the first index of each row's maximum of ``x [B, V]``, as `jnp.argmax`.

    Two plain reductions (the maximum, then the lowest index holding it): XLA on CPU runs
    these several times faster than the paired value-and-index reduction `jnp.argmax` lowers to.
    """
    v = x.shape[-1]
    top = jnp.max(x, axis=-1, keepdims=True)
    index = jnp.arange(v, dtype=jnp.int32)[None, :]
    return jnp.minimum(jnp.min(jnp.where(x == top, index, v), axis=-1), v - 1)  # NaN rows: v - 1
