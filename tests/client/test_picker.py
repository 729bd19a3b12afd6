"""Prefix-affine replica choice: rendezvous homes, the load bound, the spill to the key's next
replica, power of two without a key, and the client routing a shared prefix to one real
replica."""

from __future__ import annotations

import random

import pytest

from sax.client import Model
from sax.client.picker import PREFIX_CHARS, Picker, choose, home, load_bound, prefix_key
from tests.client.fakes import FakeCell

REPLICAS = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]
KEYS = [f"system prompt {i}" for i in range(400)]


def test_prefix_key_is_the_prompt_start() -> None:
    system = "You are a helpful assistant. " * 20
    assert prefix_key(system + "What is 2+2?") == prefix_key(system + "Name a color.")
    assert len(prefix_key(system) or "") == PREFIX_CHARS
    assert prefix_key("short") is None  # too short to be worth routing by: load decides


def test_homes_are_stable_and_spread() -> None:
    homes = [home(k, REPLICAS) for k in KEYS]
    assert homes == [home(k, list(reversed(REPLICAS))) for k in KEYS]  # order does not matter
    shares = {a: homes.count(a) / len(KEYS) for a in REPLICAS}
    assert all(0.15 < s < 0.35 for s in shares.values()), shares


def test_adding_a_replica_moves_only_the_keys_it_takes() -> None:
    """Consistent hashing: a new replica takes about 1/n of the keys and no key moves between
    the old replicas, so their prefix caches stay useful."""
    before = {k: home(k, REPLICAS) for k in KEYS}
    grown = [*REPLICAS, "10.0.0.5:1"]
    after = {k: home(k, grown) for k in KEYS}
    moved = [k for k in KEYS if after[k] != before[k]]
    assert all(after[k] == "10.0.0.5:1" for k in moved)
    assert 0.1 < len(moved) / len(KEYS) < 0.3


@pytest.mark.parametrize(
    ("pending", "factor", "slack", "bound"),
    [
        ({}, 1.25, 0, 1),  # idle: 1.25 * 1 / 2 -> 1
        ({}, 1.25, 4, 5),  # idle: 1 / 2 + 4 -> 5
        ({"a": 3, "b": 3}, 1.25, 0, 5),  # 1.25 * 7 / 2 = 4.375 -> 5
        ({"a": 3, "b": 3}, 1.25, 4, 8),  # 7 / 2 + 4 = 7.5 -> 8
        ({"a": 10}, 1.25, 4, 10),  # 11 / 2 + 4 = 9.5 beats 1.25 * 11 / 2 = 6.875
        ({"a": 10}, 2.0, 4, 11),  # 2 * 11 / 2 = 11 beats 9.5
        ({"a": 40, "b": 40}, 1.25, 4, 51),  # 1.25 * 81 / 2 = 50.6 beats 44.5
        ({"a": 2, "elsewhere": 100}, 1.0, 0, 2),  # only the candidates count
    ],
)
def test_load_bound(pending: dict[str, int], factor: float, slack: float, bound: int) -> None:
    assert load_bound(["a", "b"], pending, factor, slack) == bound


def _key_homed_at(address: str, addresses: list[str]) -> str:
    return next(k for k in KEYS if home(k, addresses) == address)


@pytest.mark.parametrize(
    ("pending", "want"),
    [
        ({}, "a"),  # idle: the home (bound 5)
        ({"a": 4, "b": 4}, "a"),  # balanced: 5 <= bound ceil(9 / 2 + 4) = 9
        ({"a": 8, "b": 0}, "a"),  # 9 <= bound ceil(9 / 2 + 4) = 9: the slack keeps it home
        ({"a": 9, "b": 0}, "b"),  # 10 > bound 9: the next replica in the key's order
        ({"a": 18, "b": 10}, "a"),  # 19 <= bound ceil(max(1.25 * 14.5, 14.5 + 4)) = 19
        ({"a": 19, "b": 10}, "b"),  # 20 > bound 19
        ({"a": 68, "b": 40}, "a"),  # 69 <= bound ceil(1.25 * 54.5) = 69: the factor governs
        ({"a": 69, "b": 40}, "b"),  # 70 > bound ceil(1.25 * 55) = 69
    ],
)
def test_choose_keeps_the_home_within_the_bound(pending: dict[str, int], want: str) -> None:
    key = _key_homed_at("a", ["a", "b"])
    assert choose(["a", "b"], pending, key, rng=random.Random(0)) == want


def test_choose_without_a_key_is_power_of_two_choices() -> None:
    rng = random.Random(3)
    pending = {"a": 5, "b": 0, "c": 5}
    picks = [choose(["a", "b", "c"], pending, None, rng=rng) for _ in range(300)]
    # b wins every draw it is in (2 of 3 pairs); a and c tie against each other.
    assert 0.6 < picks.count("b") / len(picks) < 0.75
    assert choose(["only"], {"only": 99}, "k") == "only"


def test_picker_routes_a_key_home_and_around_an_ejected_home() -> None:
    picker = Picker()
    addresses = ["a", "b", "c"]
    key = _key_homed_at("b", addresses)
    for _ in range(5):
        assert picker.acquire(addresses, key=key) == "b"
        picker.release("b")
    picker.eject("b")
    fallback = picker.acquire(addresses, key=key)
    assert fallback == home(key, ["a", "c"])  # its home among the rest, also stable


def test_a_shared_prefix_lands_on_one_replica(cell: FakeCell) -> None:
    """Two real replicas: every request sharing a system prompt goes to one of them, and
    requests without a shared prefix still spread over both."""
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    system = "You are a terse assistant who answers in one word. " * 6
    for i in range(20):
        text = f"{system}Question {i}?"
        assert m.lm.generate(text) == [(text, 0.0)]
    assert sorted(r.served for r in cell.replicas) == [0, 20]

    for r in cell.replicas:
        r.served = 0
    for i in range(40):
        assert m.lm.generate(f"question {i}") == [(f"question {i}", 0.0)]
    assert all(r.served > 5 for r in cell.replicas), [r.served for r in cell.replicas]


def test_a_hot_prefix_spills_over_under_load() -> None:
    """Bounded load: requests in flight with one prefix use both replicas once the home holds
    its bound, max(1.25x, +4) the average, and the overflow goes to the key's second replica."""
    key = _key_homed_at("a", ["a", "b"])
    for in_flight, home_holds in [(8, 8), (16, 12), (32, 20), (200, 125)]:
        picker = Picker()
        picks = [picker.acquire(["a", "b"], key=key) for _ in range(in_flight)]
        assert picks[0] == "a"
        assert picker.pending("a") == home_holds
        assert picker.pending("b") == in_flight - home_holds
