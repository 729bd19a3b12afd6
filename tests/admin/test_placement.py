"""Table-driven tests of the pure placement function, one rule per case.

Cases marked "ref N" adapt the original's TestBasicAssignment (reference 12.1) to our inputs:
memory is bytes per server (no per-core tables), so its multi-core case has no counterpart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from sax.admin.placement import Failure, ServerView, place, requirements
from sax.schemas import PublishedModel, ReplicaStatus

G = 1 << 30
L, ING, FAIL, UNL = (
    ReplicaStatus.LOADED,
    ReplicaStatus.LOADING,
    ReplicaStatus.FAILED,
    ReplicaStatus.UNLOADING,
)


def srv(
    addr: str,
    *paths: str,
    mem: int = 0,
    model_mem: dict[str, int] | None = None,
    tags: tuple[str, ...] = (),
    chip: str = "cpu",
    topo: str = "1",
    **replicas: ReplicaStatus | None,
) -> ServerView:
    return ServerView(
        address=addr,
        chip=chip,
        topology=topo,
        memory_bytes=mem,
        model_paths=frozenset(paths or ("p0",)),
        model_memory=model_mem or {},
        tags=frozenset(tags),
        replicas={f"/sax/c/{k}": v for k, v in replicas.items()},
    )


def mdl(name: str, path: str = "p0", n: int = 1, **overrides: Any) -> PublishedModel:
    return PublishedModel(
        model_id=f"/sax/c/{name}",
        model_path=path,
        checkpoint_path="None",
        num_replicas=n,
        overrides=overrides,
    )


@dataclass
class Case:
    name: str
    models: list[PublishedModel]
    servers: list[ServerView]
    want: dict[str, list[str]]  # server -> short model names
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    now: float = 100.0
    reasons: dict[str, str] = field(default_factory=dict)  # model -> substring of its reason


CASES = [
    Case(
        "model path must be served",
        [mdl("m0", "p1")],
        [srv("s0", "p0")],
        {"s0": []},
        reasons={"m0": "0 of 1 replicas placed: no live server serves p1"},
    ),
    Case(
        "ref 1: one server, several models, memory decides",
        [
            mdl("m0", "p0", ram=1 * G),
            mdl("m1", "p1", ram=20 * G),
            mdl("m2", "p2", ram=8 * G),
            mdl("m3", "p1", ram=10 * G),
        ],
        [srv("s0", "p0", "p1", mem=16 * G)],
        {"s0": ["m0", "m3"]},
        reasons={"m1": "1 lack free memory", "m2": "no live server serves p2"},
    ),
    Case(
        "ref 2: one model per path-matching server",
        [mdl("m0", "p0"), mdl("m1", "p1"), mdl("m2", "p2")],
        [srv("s0", "p0"), srv("s1", "p1"), srv("s2", "p2")],
        {"s0": ["m0"], "s1": ["m1"], "s2": ["m2"]},
    ),
    Case(
        "ref 3: too few servers is a partial placement with a reason",
        [mdl("m0", n=5, ram=4 * G)],
        [srv("s0", mem=16 * G), srv("s1", mem=16 * G), srv("s2", mem=16 * G)],
        {"s0": ["m0"], "s1": ["m0"], "s2": ["m0"]},
        reasons={"m0": "3 of 5 replicas placed: no other live server serves p0"},
    ),
    Case(
        "ref 4: loaded but unpublished is left out (the server unloads it)",
        [],
        [srv("s0", m0=L), srv("s1", m0=L), srv("s2", m0=L)],
        {"s0": [], "s1": [], "s2": []},
    ),
    Case(
        "ref 5: one replica loading, two wanted: add the least loaded, first by address",
        [mdl("m0", n=2)],
        [srv("s0"), srv("s1", m0=ING), srv("s2")],
        {"s0": ["m0"], "s1": ["m0"], "s2": []},
    ),
    Case(
        "ref 6: scale down keeps the loaded replica, drops the loading one",
        [mdl("m0", n=1)],
        [srv("s0"), srv("s1", m0=ING), srv("s2", m0=L)],
        {"s0": [], "s1": [], "s2": ["m0"]},
    ),
    Case(
        "ref 7: memory overflow places the largest models first",
        [mdl(f"m{i}", ram=(1 << i) * G) for i in range(4)],
        [srv("s0", mem=14 * G)],
        {"s0": ["m1", "m2", "m3"]},
        reasons={"m0": "lack free memory"},
    ),
    Case(
        "scale down drops unreported before loading, then by address",
        [mdl("m0", n=2)],
        [srv("s0", m0=None), srv("s1", m0=ING), srv("s2", m0=L), srv("s3", m0=ING)],
        {"s0": [], "s1": ["m0"], "s2": ["m0"], "s3": []},
    ),
    Case(
        "chip and topology overrides pick matching servers",
        [mdl("m0", n=2, chip="tpu_v5e", topology="2x2")],
        [srv("s0"), srv("s1", chip="tpu_v5e", topo="2x2"), srv("s2", chip="tpu_v5e", topo="1x1")],
        {"s0": [], "s1": ["m0"], "s2": []},
        reasons={"m0": "2 do not match chip=tpu_v5e topology=2x2"},
    ),
    Case(
        "constraints as a list need every tag",
        [mdl("m0", n=3, constraints=["a", "b"])],
        [srv("s0", tags=("a",)), srv("s1", tags=("a", "b", "c")), srv("s2", tags=("b", "a"))],
        {"s0": [], "s1": ["m0"], "s2": ["m0"]},
    ),
    Case(
        "constraints as a comma string",
        [mdl("m0", constraints="zone=x,gpu")],
        [srv("s0", tags=("gpu",)), srv("s1", tags=("gpu", "zone=x"))],
        {"s0": [], "s1": ["m0"]},
    ),
    Case(
        "advertised servable memory packs models onto a server while they fit",
        [mdl("m0"), mdl("m1"), mdl("m2")],
        [srv("s0", mem=13 * G, model_mem={"p0": 6 * G})],
        {"s0": ["m0", "m1"]},
        reasons={"m2": "0 of 1 replicas placed: 1 live server(s) serve p0 but 1 lack free memory"},
    ),
    Case(
        "memory 0 means unlimited",
        [mdl("m0", ram=500 * G), mdl("m1", ram=500 * G)],
        [srv("s0", mem=0)],
        {"s0": ["m0", "m1"]},
    ),
    Case(
        "replicas of one model go to distinct servers",
        [mdl("m0", n=3)],
        [srv("s0")],
        {"s0": ["m0"]},
        reasons={"m0": "1 of 3 replicas placed: no other live server serves p0"},
    ),
    Case(
        "existing replicas are sticky even when another server is emptier",
        [mdl("m0"), mdl("m1")],
        [srv("s0"), srv("s1", m0=L, m1=ING)],
        {"s0": [], "s1": ["m0", "m1"]},
    ),
    Case(
        "new replicas go to the least loaded server",
        [mdl("a"), mdl("b"), mdl("c")],
        [srv("s0", a=L, b=L), srv("s1")],
        {"s0": ["a", "b"], "s1": ["c"]},
    ),
    Case(
        "a failed load is dropped and placed on another server",
        [mdl("m0")],
        [srv("s0", m0=FAIL), srv("s1")],
        {"s0": [], "s1": ["m0"]},
        failures={("/sax/c/m0", "s0"): Failure(1, 101.0, "boom")},
    ),
    Case(
        "a failed pair waits out its backoff, and the reason says so",
        [mdl("m0")],
        [srv("s0")],
        {"s0": []},
        failures={("/sax/c/m0", "s0"): Failure(2, 104.0, "out of memory")},
        reasons={"m0": "1 in backoff after a failed load; last: out of memory, retry in 4.0 s"},
    ),
    Case(
        "after the backoff the same server is retried",
        [mdl("m0")],
        [srv("s0")],
        {"s0": ["m0"]},
        failures={("/sax/c/m0", "s0"): Failure(2, 99.0, "out of memory")},
    ),
    Case(
        "a never-failed server is preferred over one whose backoff ended",
        [mdl("m0")],
        [srv("s0"), srv("s1", x=L)],
        {"s0": [], "s1": ["m0"]},
        failures={("/sax/c/m0", "s0"): Failure(1, 99.0, "boom")},
    ),
    Case(
        "a server still reporting FAILED or UNLOADING is not a candidate",
        [mdl("m0", n=3)],
        [srv("s0", m0=FAIL), srv("s1", m0=UNL), srv("s2")],
        {"s0": [], "s1": [], "s2": ["m0"]},
        reasons={"m0": "2 still unloading or failed it"},
    ),
    Case(
        "a replica whose server no longer qualifies moves",
        [mdl("m0", constraints="fast")],
        [srv("s0", m0=L), srv("s1", tags=("fast",))],
        {"s0": [], "s1": ["m0"]},
    ),
    Case(
        "zero replicas unloads everything",
        [mdl("m0", n=0)],
        [srv("s0", m0=L)],
        {"s0": []},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_place(case: Case) -> None:
    got = place(case.models, case.servers, case.failures, case.now)
    assert {addr: [m.rsplit("/", 1)[1] for m in mids] for addr, mids in got.assignment.items()} == (
        case.want
    )
    for model, text in case.reasons.items():
        assert text in got.reasons[f"/sax/c/{model}"]
    fully_placed = {
        m.model_id for m in case.models if len(got.replicas[m.model_id]) >= m.num_replicas
    }
    assert not fully_placed & got.reasons.keys()


def test_place_is_deterministic_whatever_the_input_order() -> None:
    models = [mdl(f"m{i}", n=1 + i % 3, ram=(i % 4) * G) for i in range(30)]
    servers = [srv(f"s{i:02d}", mem=8 * G) for i in range(20)]
    first = place(models, servers, {}, 0.0)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(models)
        rng.shuffle(servers)
        assert place(models, servers, {}, 0.0) == first


def test_requirements_parse_the_placement_overrides() -> None:
    r = requirements({"ram": "123", "constraints": " a, b ,", "chip": "tpu", "topology": ""})
    assert (r.ram, r.chip, r.topology, r.constraints) == (123, "tpu", None, frozenset({"a", "b"}))
    assert requirements({"ram": "lots"}).ram is None
