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

A `Picker` also remembers the replica each of its recent keys went to first (its owner). A key's
first sight goes to its home only while the home is no busier than the average (a tight bound),
else on along its rendezvous order; its repeats go to the owner under the looser bound above.
Prompts whose prefix never comes back are so spread as evenly as by load alone, while repeats
still find their prefix cached. Placing every keyed request by its rendezvous order let a home
run up to its bound whether or not its prefix came back: on two CPU replicas, 0.77-0.94x the
throughput of load alone on prompts without a shared prefix, against 1.17x with this rule, and
hit rates 1.21x and 1.56x load alone's on shared prefixes against 1.63x and 1.75x (the bench's
``--workload prefix``). On a balanced cell a first sight goes home, so clients mostly agree on
where a prefix lives.

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
from collections import OrderedDict
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
# The bound for a key's first sight (no repeat of it in this client's memory): its home only
# while no busier than the average, so prompts whose prefix is never reused are spread by load.
FIRST_FACTOR = 1.0
FIRST_SLACK = 0.0
# Keys a client remembers (least recently used forgotten first), with the replica each went to.
REMEMBERED_KEYS = 4096


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
        within = _first_within(rendezvous_order(key, addresses), addresses, pending, factor, slack)
        if within is not None:
            return within
        # Only with factor < 1 or slack < 0, which leave too little room: fall back to load.
    a, b = (rng or random).sample(list(addresses), 2)
    return a if pending.get(a, 0) <= pending.get(b, 0) else b


def _first_within(
    order: Sequence[str],
    addresses: Sequence[str],
    pending: Mapping[str, int],
    factor: float,
    slack: float,
) -> str | None:
    """The first of `order` that stays within `load_bound` over `addresses` with one more."""
    bound = load_bound(addresses, pending, factor, slack)
    return next((a for a in order if pending.get(a, 0) + 1 <= bound), None)


class Picker:
    """Per-address pending counts and ejections, shared by every model of the process (a server
    hosting two models is loaded by both), and the replica each recent key went to.

    A keyed request whose key this picker has placed before (one of its last `remember` keys)
    goes where the key went first, its owner, while the owner is within the bound of `factor`
    and `slack` (`load_bound`), else on along the key's rendezvous order. A key seen for the
    first time (or whose owner is gone) goes to its home only while the home is within the
    tight bound of `first_factor` and `first_slack` (by default: no busier than the average),
    else on along its rendezvous order; that replica becomes its owner. So a prompt whose
    prefix never comes back costs the balance of load nothing, while the repeats of one that
    does find it cached. Clients that see a prefix first on a balanced cell agree on its home,
    since the first sight goes home unless the home is the busier; `remember=0` places every
    keyed request as `choose` does, by its rendezvous order under the loose bound.
    """

    def __init__(
        self,
        factor: float = LOAD_FACTOR,
        slack: float = LOAD_SLACK,
        *,
        first_factor: float = FIRST_FACTOR,
        first_slack: float = FIRST_SLACK,
        remember: int = REMEMBERED_KEYS,
    ) -> None:
        self.factor = factor
        self.slack = slack
        self.first_factor = first_factor
        self.first_slack = first_slack
        self.remember = remember
        self._owners: OrderedDict[bytes, str] = OrderedDict()  # key digest -> its first replica
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
            if key is None or len(candidates) == 1 or self.remember <= 0:
                choice = choose(
                    candidates, self._pending, key, factor=self.factor, slack=self.slack
                )
            else:
                choice = self._keyed(candidates, key)
            self._pending[choice] = self._pending.get(choice, 0) + 1
            return choice

    def _keyed(self, candidates: Sequence[str], key: str) -> str:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        owner = self._owners.get(digest)
        order = rendezvous_order(key, candidates)
        known = owner is not None and owner in candidates
        if owner is not None and known:
            self._owners.move_to_end(digest)
            order = [owner, *(a for a in order if a != owner)]
            factor, slack = self.factor, self.slack
        else:
            factor, slack = self.first_factor, self.first_slack
        choice = _first_within(order, candidates, self._pending, factor, slack)
        if choice is None:  # a bound below the average: load alone
            choice = choose(candidates, self._pending, None)
        if not known:
            self._owners[digest] = choice
            self._owners.move_to_end(digest)
            while len(self._owners) > self.remember:
                self._owners.popitem(last=False)
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

    def ejected(self, address: str) -> bool:
        """Whether `address` is ejected now (`eject`, for `EJECT_S`)."""
        with self._lock:
            return self._ejected_until.get(address, 0.0) > time.monotonic()

    def pending(self, address: str) -> int:
        return self._pending.get(address, 0)


PICKER = Picker()
