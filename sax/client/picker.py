"""Replica choice: by the prompt's prefix where one is given, else power of two choices.

Power of two choices: two random ready replicas are drawn and the one with fewer of *our*
requests in flight wins. It needs no coordination, spreads load as evenly as least-loaded, and
adapts to a slow replica (its requests pile up, so it is chosen less).

Prefix affinity (`choose` with a key): requests whose prompts start alike go to the same replica,
so vLLM's prefix cache there already holds the shared system prompt or conversation and prefill
skips it. The key's home replica comes from rendezvous (highest-random-weight) hashing, a form of
consistent hashing: adding or removing a replica moves only the keys whose home it was. The home
is bounded-load: if it already has more than `LOAD_FACTOR` times the average in flight, the
request falls back to power of two choices, so a hot prefix cannot overload one replica. A
prompt shorter than `PREFIX_CHARS` has no key and is placed by load alone. Routers
in front of a fleet do this centrally; here every client decides alone, from its own counts,
with no extra hop and no shared state.

The classic trap of load-based choice is a dead replica that fails instantly and so always looks
idle; `eject` therefore sidelines an address that refused a connection or answered 503 for
`EJECT_S`, until the admin's WatchLoc removes it for good.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Container, Mapping, Sequence

EJECT_S = 1.0
# Characters of the prompt that pick its home replica (~64 tokens). A shared prefix shorter than
# this saves little prefill (vLLM reuses whole KV blocks of 16 tokens on GPU, 128 on CPU); a
# longer one is routed by its start.
PREFIX_CHARS = 256
# The home replica takes a request while its in-flight count stays within this multiple of the
# average (consistent hashing with bounded loads, Mirrokni et al. 2018).
LOAD_FACTOR = 1.25


def prefix_key(text: str, chars: int = PREFIX_CHARS) -> str | None:
    """The part of a prompt that routes it: its first `chars` characters; None for a shorter
    prompt, whose cached prefix would save too little to outweigh balancing by load."""
    return text[:chars] if len(text) >= chars else None


def _weight(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{address}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def home(key: str, addresses: Sequence[str]) -> str:
    """The replica `key` hashes to (rendezvous hashing); `addresses` must not be empty."""
    return max(addresses, key=lambda a: _weight(key, a))


def load_bound(addresses: Sequence[str], pending: Mapping[str, int], factor: float) -> int:
    """The most requests a home replica may hold, counting the one being placed:
    ``ceil(factor * (in flight + 1) / replicas)``."""
    total = sum(pending.get(a, 0) for a in addresses) + 1
    return math.ceil(factor * total / len(addresses))


def choose(
    addresses: Sequence[str],
    pending: Mapping[str, int],
    key: str | None = None,
    *,
    rng: random.Random | None = None,
    factor: float = LOAD_FACTOR,
) -> str:
    """One of `addresses` (not empty) for a request with routing `key` (None: no affinity).

    With a key: its `home` unless that replica would exceed `load_bound`; otherwise (and
    without a key) the less loaded of two random replicas, ties to the first drawn.
    """
    if len(addresses) == 1:
        return addresses[0]
    if key is not None:
        preferred = home(key, addresses)
        if pending.get(preferred, 0) + 1 <= load_bound(addresses, pending, factor):
            return preferred
    a, b = (rng or random).sample(list(addresses), 2)
    return a if pending.get(a, 0) <= pending.get(b, 0) else b


class Picker:
    """Per-address pending counts and ejections, shared by every model of the process (a server
    hosting two models is loaded by both)."""

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}
        self._ejected_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(
        self, addresses: Sequence[str], avoid: Container[str] = (), key: str | None = None
    ) -> str | None:
        """Chooses a replica (`choose`, by `key` when given) and counts a request in flight on
        it; None if `addresses` is empty.

        `avoid` holds replicas this call already failed on; ejected ones are skipped too, unless
        nothing else is left (then any replica beats failing without trying).
        """
        if not addresses:
            return None
        with self._lock:
            now = time.monotonic()
            candidates = [
                a for a in addresses if a not in avoid and self._ejected_until.get(a, 0.0) <= now
            ]
            if not candidates:
                candidates = [a for a in addresses if a not in avoid] or list(addresses)
            choice = choose(candidates, self._pending, key)
            self._pending[choice] = self._pending.get(choice, 0) + 1
            return choice

    def release(self, address: str) -> None:
        with self._lock:
            left = self._pending.get(address, 0) - 1
            if left > 0:
                self._pending[address] = left
            else:
                self._pending.pop(address, None)

    def eject(self, address: str) -> None:
        with self._lock:
            self._ejected_until[address] = time.monotonic() + EJECT_S

    def pending(self, address: str) -> int:
        return self._pending.get(address, 0)


PICKER = Picker()
