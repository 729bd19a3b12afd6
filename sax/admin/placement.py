"""Placement: which server holds which replica. A pure, deterministic function.

`place` takes everything that decides placement as plain values (published models, live
servers with their capabilities and current replicas, load-failure history, the clock) and
returns the desired assignment per server plus, per model, why it has fewer replicas than
requested. `sax.admin.placer` calls it on every event (coalesced); tests call it with tables.

Rules, in order:

1. A replica may live on a server only if the server advertises the model's ``model_path`` and
   matches its ``chip``/``topology`` overrides and every tag in ``constraints``.
2. Existing replicas are sticky: a replica stays where it is unless (1) no longer holds, its
   load FAILED there (the server must drop it; it is retried elsewhere, see 6), or the server
   is unloading it.
3. Scale-down keeps LOADED replicas first, then LOADING, then ones not yet reported, each by
   server address; the rest are dropped.
4. Scale-up handles models biggest first (by memory, then id: large models get first pick of
   free memory, as the original's memory-aware assigner did), and places each missing replica
   on a distinct eligible server: never-failed servers before ones where the model failed,
   then least loaded, then by address.
5. Memory: a replica needs ``overrides["ram"]`` bytes if set, else what the server advertises
   for the model path (``servable_memory_bytes``), else 0. A server with ``memory_bytes`` 0
   has no limit. Several models share a server while they fit.
6. After a FAILED load the (model, server) pair is skipped until its backoff deadline passes.
7. Too few servers is not an error: the model gets what fits and a reason that says why.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sax.schemas import PublishedModel, ReplicaStatus

# Scale-down keeps replicas in this order (lower first); anything absent ranks last.
_KEEP_RANK: dict[ReplicaStatus | None, int] = {
    ReplicaStatus.LOADED: 0,
    ReplicaStatus.LOADING: 1,
    None: 2,
}
# Reported statuses that mean "not a replica, and not a candidate until the server clears it".
_BLOCKING = frozenset({ReplicaStatus.FAILED, ReplicaStatus.UNLOADING})


@dataclass(frozen=True)
class ServerView:
    """One live server as placement sees it."""

    address: str
    chip: str = "cpu"
    topology: str = "1"
    memory_bytes: int = 0  # 0 = unlimited
    model_paths: frozenset[str] = frozenset()
    model_memory: Mapping[str, int] = field(default_factory=dict)  # model path -> bytes
    tags: frozenset[str] = frozenset()
    # Current replicas: model id -> reported status (None = assigned, not reported yet).
    replicas: Mapping[str, ReplicaStatus | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """Load-failure history of one (model, server) pair."""

    count: int
    retry_at: float  # the pair is not a candidate before this time
    reason: str = ""


@dataclass(frozen=True)
class Requirements:
    """What a model asks of its servers, parsed from its overrides."""

    ram: int | None = None
    chip: str | None = None
    topology: str | None = None
    constraints: frozenset[str] = frozenset()

    def matches(self, server: ServerView) -> bool:
        if self.chip is not None and self.chip.lower() != server.chip.lower():
            return False
        if self.topology is not None and self.topology.lower() != server.topology.lower():
            return False
        return self.constraints <= server.tags

    def describe(self) -> str:
        parts = []
        if self.chip is not None:
            parts.append(f"chip={self.chip}")
        if self.topology is not None:
            parts.append(f"topology={self.topology}")
        if self.constraints:
            parts.append("tags " + ",".join(sorted(self.constraints)))
        return " ".join(parts)


def requirements(overrides: Mapping[str, Any]) -> Requirements:
    """Parses the placement keys of `overrides`; `Cell` validates them at publish time."""
    ram = overrides.get("ram")
    constraints = overrides.get("constraints", ())
    if isinstance(constraints, str):
        constraints = constraints.split(",")
    chip = overrides.get("chip")
    topology = overrides.get("topology")
    return Requirements(
        ram=int(ram) if ram is not None and str(ram).strip().isdigit() else None,
        chip=str(chip) if chip not in (None, "") else None,
        topology=str(topology) if topology not in (None, "") else None,
        constraints=frozenset(str(c).strip() for c in constraints if str(c).strip()),
    )


@dataclass(frozen=True)
class Placement:
    assignment: dict[str, tuple[str, ...]]  # server address -> model ids, sorted
    replicas: dict[str, tuple[str, ...]]  # model id -> server addresses, sorted
    reasons: dict[str, str]  # model id -> why fewer replicas than requested are placed


def place(
    models: Iterable[PublishedModel],
    servers: Iterable[ServerView],
    failures: Mapping[tuple[str, str], Failure],
    now: float,
) -> Placement:
    """Desired assignment for every live server; see the module docstring for the rules."""
    published = {m.model_id: m for m in sorted(models, key=lambda m: m.model_id)}
    live = sorted(servers, key=lambda s: s.address)
    reqs = {mid: requirements(m.overrides) for mid, m in published.items()}
    by_path: dict[str, list[ServerView]] = defaultdict(list)
    for s in live:
        for path in s.model_paths:
            by_path[path].append(s)

    def need(mid: str, s: ServerView) -> int:
        ram = reqs[mid].ram
        return ram if ram is not None else s.model_memory.get(published[mid].model_path, 0)

    used: dict[str, int] = defaultdict(int)
    load: dict[str, int] = defaultdict(int)
    held: dict[str, list[tuple[int, str]]] = defaultdict(list)  # model -> [(keep rank, addr)]

    # Sticky replicas that still qualify.
    for s in live:
        for mid, status in s.replicas.items():
            m = published.get(mid)
            if m is None or status in _BLOCKING:
                continue
            if m.model_path not in s.model_paths or not reqs[mid].matches(s):
                continue
            held[mid].append((_KEEP_RANK.get(status, 3), s.address))
            used[s.address] += need(mid, s)
            load[s.address] += 1

    # Scale down: keep the most ready replicas.
    by_addr = {s.address: s for s in live}
    for mid, m in published.items():
        keep = sorted(held[mid])
        for _, addr in keep[max(m.num_replicas, 0) :]:
            used[addr] -= need(mid, by_addr[addr])
            load[addr] -= 1
        held[mid] = keep[: max(m.num_replicas, 0)]

    # Scale up: biggest models first.
    path_size = {
        path: max((s.model_memory.get(path, 0) for s in servers_of), default=0)
        for path, servers_of in by_path.items()
    }

    def size_hint(mid: str) -> int:
        ram = reqs[mid].ram
        return ram if ram is not None else path_size.get(published[mid].model_path, 0)

    # Servers of each path in candidate order (load, address), kept sorted as loads grow, so
    # a model's search stops at its first `missing` never-failed eligible servers.
    order = {path: sorted((load[s.address], s.address) for s in ss) for path, ss in by_path.items()}

    def add_load(s: ServerView) -> None:
        for path in s.model_paths:
            keys = order[path]
            del keys[bisect.bisect_left(keys, (load[s.address], s.address))]
            bisect.insort(keys, (load[s.address] + 1, s.address))
        load[s.address] += 1

    short = [mid for mid, m in published.items() if len(held[mid]) < m.num_replicas]
    reasons: dict[str, str] = {}
    for mid in sorted(short, key=lambda mid: (-size_hint(mid), mid)):
        m = published[mid]
        missing = m.num_replicas - len(held[mid])
        holders = {addr for _, addr in held[mid]}
        excluded: dict[str, int] = defaultdict(int)
        fresh: list[ServerView] = []  # never failed this model
        retried: list[ServerView] = []  # failed it before; backoff over
        for _, addr in order.get(m.model_path, ()):
            s = by_addr[addr]
            if addr in holders:
                continue
            f = failures.get((mid, addr))
            if f is not None and f.retry_at > now:
                excluded["backoff"] += 1
            elif s.replicas.get(mid, ReplicaStatus.LOADED) in _BLOCKING:
                excluded["busy"] += 1
            elif not reqs[mid].matches(s):
                excluded["mismatch"] += 1
            elif s.memory_bytes and used[addr] + need(mid, s) > s.memory_bytes:
                excluded["memory"] += 1
            elif f is None:
                fresh.append(s)
                if len(fresh) == missing:
                    break
            else:
                retried.append(s)
        for s in (fresh + retried)[:missing]:
            held[mid].append((_KEEP_RANK[None], s.address))
            used[s.address] += need(mid, s)
            add_load(s)
        if len(held[mid]) < m.num_replicas:
            reasons[mid] = _explain(m, reqs[mid], len(held[mid]), excluded, failures, now)

    replicas = {mid: tuple(sorted(addr for _, addr in held[mid])) for mid in published}
    assignment: dict[str, list[str]] = {s.address: [] for s in live}
    for mid, addrs in replicas.items():
        for addr in addrs:
            assignment[addr].append(mid)
    return Placement(
        assignment={addr: tuple(sorted(mids)) for addr, mids in assignment.items()},
        replicas=replicas,
        reasons=reasons,
    )


def _explain(
    m: PublishedModel,
    req: Requirements,
    placed: int,
    excluded: Mapping[str, int],
    failures: Mapping[tuple[str, str], Failure],
    now: float,
) -> str:
    head = f"{placed} of {m.num_replicas} replicas placed: "
    other = "other " if placed else ""
    if not any(excluded.values()):
        return head + f"no {other}live server serves {m.model_path}"
    parts = []
    if excluded.get("mismatch"):
        parts.append(f"{excluded['mismatch']} do not match {req.describe()}")
    if excluded.get("memory"):
        need = f"{req.ram} bytes" if req.ram is not None else "its advertised size"
        parts.append(f"{excluded['memory']} lack free memory (needs {need})")
    if excluded.get("backoff"):
        pending = [
            f for (mid, addr), f in failures.items() if mid == m.model_id and f.retry_at > now
        ]
        soonest = min(pending, key=lambda f: f.retry_at) if pending else None
        detail = (
            f"; last: {soonest.reason}, retry in {soonest.retry_at - now:.1f} s" if soonest else ""
        )
        parts.append(f"{excluded['backoff']} in backoff after a failed load{detail}")
    if excluded.get("busy"):
        parts.append(f"{excluded['busy']} still unloading or failed it")
    n = sum(excluded.values())
    return head + f"{n} {other}live server(s) serve {m.model_path} but " + ", ".join(parts)
