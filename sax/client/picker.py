"""Replica choice: by the prompt's prefix where one is given, else power of two choices.

Power of two choices: two random ready replicas are drawn and the one with fewer of *our*
requests in flight wins. It needs no coordination, spreads load as evenly as least-loaded, and
adapts to a slow replica (its requests pile up, so it is chosen less).

Prefix affinity (`choose` with a key): requests whose prompts start alike go to the same replica,
so vLLM's prefix cache there already holds the shared system prompt or conversation and prefill
skips it. The key's home replica comes from rendezvous (highest-random-weight) hashing, a form of
consistent hashing: adding or removing a replica moves only the keys whose home it was. Loads
are bounded (consistent hashing with bounded loads, Mirrokni et al. 2018): a replica takes a
keyed request only while it holds at most `load_bound` of this client's requests in flight,
which is the larger of `LOAD_FACTOR` times the average and the average plus `LOAD_SLACK`; a
request whose home is full goes to the next replica in the key's rendezvous order that is not,
so the overflow of a hot prefix also lands on one replica, which caches it in turn. The
relative bound keeps a hot prefix from overloading one replica at any load; the absolute slack
keeps a few requests in flight (where 1.25x the average is 1 or 2 requests) from scattering a
prefix over every replica. Routers that balance cache affinity against load (SGLang's and
vLLM's cache-aware routers) likewise leave a request on its cached replica until the imbalance
exceeds both an absolute and a relative threshold. A prompt shorter than `PREFIX_CHARS` has no
key and is placed by load alone. Such routers decide centrally; here every client decides
alone, from its own counts, with no extra hop and no shared state.

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
# A replica takes a keyed request while its in-flight count, counting that request, stays within
# this multiple of the average (consistent hashing with bounded loads, Mirrokni et al. 2018) ...
LOAD_FACTOR = 1.25
# ... or within this many requests over the average, whichever is larger. A continuous-batching
# engine runs a replica's requests as one batch, so a few more sequences there cost less than
# prefilling a shared prefix again elsewhere; the factor governs from 16 requests per replica up.
LOAD_SLACK = 4


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


def rendezvous_order(key: str, addresses: Sequence[str]) -> list[str]:
    """`addresses` by decreasing rendezvous weight for `key`: its home first, then where it goes
    when the home is full, and so on. The order of any two replicas does not depend on the
    others, so removing one leaves the rest in place."""
    return sorted(addresses, key=lambda a: _weight(key, a), reverse=True)


def load_bound(
    addresses: Sequence[str],
    pending: Mapping[str, int],
    factor: float = LOAD_FACTOR,
    slack: float = LOAD_SLACK,
) -> int:
    """The most requests (an integer >= 1) one of `addresses` (not empty) may hold for a keyed
    request, counting the request being placed: with ``average = (in flight on addresses + 1) /
    replicas``, ``ceil(max(factor * average, average + slack))``. Counts in `pending` for other
    addresses are ignored.

    With ``factor >= 1`` and ``slack >= 0`` the bounds of all replicas add up to at least the
    requests in flight plus one, so at least one replica is always within its bound.
    """
    average = (sum(pending.get(a, 0) for a in addresses) + 1) / len(addresses)
    return math.ceil(max(factor * average, average + slack))


def choose(
    addresses: Sequence[str],
    pending: Mapping[str, int],
    key: str | None = None,
    *,
    rng: random.Random | None = None,
    factor: float = LOAD_FACTOR,
    slack: float = LOAD_SLACK,
) -> str:
    """One of `addresses` (not empty) for a request with routing `key` (None: no affinity), given
    the requests in flight per address in `pending` (absent: 0).

    With a key: the first replica in its `rendezvous_order` that stays within `load_bound` with
    this request (its home unless the home is full). Without a key: the less loaded of two
    random replicas, ties to the first drawn (`rng`, default the module's).
    """
    if len(addresses) == 1:
        return addresses[0]
    if key is not None:
        bound = load_bound(addresses, pending, factor, slack)
        for address in rendezvous_order(key, addresses):
            if pending.get(address, 0) + 1 <= bound:
                return address
        # Only with factor < 1 or slack < 0, which leave too little room: fall back to load.
    a, b = (rng or random).sample(list(addresses), 2)
    return a if pending.get(a, 0) <= pending.get(b, 0) else b


class Picker:
    """Per-address pending counts and ejections, shared by every model of the process (a server
    hosting two models is loaded by both). `factor` and `slack` set the load bound of keyed
    requests (`load_bound`)."""

    def __init__(self, factor: float = LOAD_FACTOR, slack: float = LOAD_SLACK) -> None:
        self.factor = factor
        self.slack = slack
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
            choice = choose(candidates, self._pending, key, factor=self.factor, slack=self.slack)
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
