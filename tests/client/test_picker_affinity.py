"""The keyed choice rule, case by case: no key, a short prompt, the home within and beyond the
bound, one replica, an ejected home; and the bound's guarantees (a keyed request always finds a
replica within it, a hot key cannot overload one replica)."""

from __future__ import annotations

import random

import pytest

from sax.client.picker import (
    LOAD_FACTOR,
    LOAD_SLACK,
    PREFIX_CHARS,
    Picker,
    choose,
    home,
    load_bound,
    prefix_key,
    rendezvous_order,
)

ABC = ["a", "b", "c"]
KEYS = [f"system prompt {i}" for i in range(400)]


def _key_ordered(order: list[str]) -> str:
    """A key whose rendezvous order over `order`'s replicas is exactly `order`."""
    return next(k for k in KEYS if rendezvous_order(k, order) == order)


def test_rendezvous_order_starts_at_home_and_survives_a_removal() -> None:
    for key in KEYS[:50]:
        order = rendezvous_order(key, ABC)
        assert order[0] == home(key, ABC)
        assert sorted(order) == ABC
        for gone in ABC:  # removing a replica keeps the others' relative order
            assert rendezvous_order(key, [a for a in ABC if a != gone]) == [
                a for a in order if a != gone
            ]


def test_no_key_places_by_load_alone() -> None:
    """Without a key the two-choices draw decides, whatever replica a key would favour."""
    pending = {"a": 9, "b": 0, "c": 9}
    picks = [choose(ABC, pending, None, rng=random.Random(i)) for i in range(200)]
    assert picks.count("b") / len(picks) > 0.6  # b wins each of the 2 in 3 draws it is in
    assert set(picks) <= set(ABC)


def test_a_short_prompt_has_no_key_and_goes_to_the_idler_replica() -> None:
    system = "You are a helpful assistant. " * 10  # over PREFIX_CHARS: keyed
    assert len(system) > PREFIX_CHARS and prefix_key(system) is not None
    assert prefix_key("Name a color.") is None
    picker = Picker()
    key = prefix_key(system)
    assert key is not None
    at = home(key, ["a", "b"])
    other = "b" if at == "a" else "a"
    for _ in range(3):
        assert picker.acquire(["a", "b"], key=key) == at  # 3 in flight at the home
    assert picker.acquire(["a", "b"], key=prefix_key("Name a color.")) == other


def test_home_within_the_bound_wins_over_an_idle_replica() -> None:
    key = _key_ordered(["a", "b", "c"])
    # 3 + 0 + 0 in flight: bound ceil(4 / 3 + 4) = 6, and the home would hold 4.
    assert choose(ABC, {"a": 3}, key) == "a"
    assert choose(ABC, {"a": 5}, key) == "a"  # 6 <= ceil(6 / 3 + 4) = 6


def test_home_beyond_the_bound_spills_to_the_keys_next_replica() -> None:
    """Spilling follows the key's rendezvous order, not load: the overflow of one prefix lands on
    one second replica (which caches it), even when a third is idler."""
    key = _key_ordered(["a", "b", "c"])
    # 9 + 3 + 0 in flight: bound ceil(13 / 3 + 4) = 9; a would hold 10, b 4.
    assert load_bound(ABC, {"a": 9, "b": 3}) == 9
    assert choose(ABC, {"a": 9, "b": 3}, key) == "b"
    # 14 + 14 + 0: bound ceil(29 / 3 + 4) = 14; a and b would hold 15: c.
    assert choose(ABC, {"a": 14, "b": 14}, key) == "c"


def test_one_replica_takes_everything() -> None:
    assert choose(["only"], {"only": 1000}, "any key") == "only"
    assert choose(["only"], {}, None) == "only"
    picker = Picker()
    assert [picker.acquire(["only"], key=KEYS[0]) for _ in range(50)] == ["only"] * 50


def test_an_ejected_home_hands_its_keys_to_their_next_replica() -> None:
    picker = Picker()
    key = _key_ordered(["b", "c", "a"])
    assert picker.acquire(ABC, key=key) == "b"
    picker.release("b")
    picker.eject("b")
    assert [picker.acquire(ABC, key=key) for _ in range(3)] == ["c"] * 3
    picker.eject("c")
    assert picker.acquire(ABC, key=key) == "a"


@pytest.mark.parametrize(("factor", "slack"), [(1.0, 0), (1.25, 0), (LOAD_FACTOR, LOAD_SLACK)])
def test_a_keyed_request_always_finds_the_first_replica_within_the_bound(
    factor: float, slack: float
) -> None:
    """For any loads, the choice is the first replica in the key's order that stays within the
    bound: one always exists, so the power-of-two fallback is never needed."""
    rng = random.Random(7)
    for _ in range(2000):
        addresses = ABC[: rng.randint(2, 3)]
        pending = {a: rng.randint(0, 40) for a in addresses}
        key = rng.choice(KEYS)
        bound = load_bound(addresses, pending, factor, slack)
        within = [a for a in rendezvous_order(key, addresses) if pending[a] + 1 <= bound]
        assert within, (pending, bound)
        assert choose(addresses, pending, key, factor=factor, slack=slack) == within[0]


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_a_hot_key_cannot_overload_one_replica(replicas: int) -> None:
    """Hundreds of requests with one prefix in flight: no replica ever holds more than the
    bound, so past max(LOAD_FACTOR x, LOAD_SLACK +) the average the key spreads."""
    addresses = [f"10.0.0.{i}:1" for i in range(replicas)]
    picker = Picker()
    for _ in range(400):
        bound = load_bound(addresses, {a: picker.pending(a) for a in addresses})
        choice = picker.acquire(addresses, key=KEYS[0])
        assert choice is not None and picker.pending(choice) <= bound
    loads = [picker.pending(a) for a in addresses]
    assert sum(loads) == 400
    assert max(loads) <= LOAD_FACTOR * 400 / replicas + 1
    assert loads[addresses.index(home(KEYS[0], addresses))] == max(loads)


def test_a_pickers_own_bound_decides_when_a_home_spills() -> None:
    """`Picker(factor, slack)` bounds its keyed requests as `choose` with those settings: with no
    slack a home spills at 1x the average, with a large one it keeps every request."""
    key = _key_ordered(["a", "b"])
    tight, loose = Picker(factor=1.0, slack=0), Picker(slack=100)
    assert [tight.acquire(["a", "b"], key=key) for _ in range(4)] == ["a", "b", "a", "b"]
    assert [loose.acquire(["a", "b"], key=key) for _ in range(40)] == ["a"] * 40
    default = Picker()
    assert (default.factor, default.slack) == (LOAD_FACTOR, LOAD_SLACK)
    # The home holds 9 (9 <= ceil(9 / 2 + 4)) before the 10th spills; then they alternate.
    placed = [default.acquire(["a", "b"], key=key) for _ in range(12)]
    assert placed == ["a"] * 9 + ["b", "a", "b"]


def test_distinct_keys_seen_once_are_spread_by_load() -> None:
    """Keys seen for the first time go home only while the home is no busier than the average:
    prompts whose prefix never comes back keep the replicas as even as load alone would, where
    the rendezvous order alone (no memory) lets a home run up to its bound."""
    addresses = ["a", "b"]
    remembering, plain = Picker(), Picker(remember=0)
    spread = {"remembering": 0, "plain": 0}
    for name, picker in (("remembering", remembering), ("plain", plain)):
        for key in KEYS[:64]:
            picker.acquire(addresses, key=key)
            spread[name] = max(spread[name], abs(picker.pending("a") - picker.pending("b")))
    assert spread["remembering"] <= 1
    assert spread["plain"] > 1


def test_a_repeat_follows_its_first_placement_not_its_home() -> None:
    """A key first placed off its home (the home was busier) stays with that replica, which
    holds its prefix, even once the home is idle again."""
    key = _key_ordered(["a", "b"])
    picker = Picker()
    while picker.pending("a") < 3:  # load the home with unkeyed requests
        picker.acquire(["a"])
    assert picker.acquire(["a", "b"], key=key) == "b"  # first sight: the home is busier
    for address in ("a", "b"):
        while picker.pending(address):
            picker.release(address)
    assert [picker.acquire(["a", "b"], key=key) for _ in range(5)] == ["b"] * 5


def test_a_forgotten_or_departed_owner_places_the_key_afresh() -> None:
    key = _key_ordered(["a", "b", "c"])
    picker = Picker(remember=2)
    while picker.pending("a") < 2:
        picker.acquire(["a"])
    assert picker.acquire(ABC, key=key) == "b"  # a busier than the average: next in order
    picker.release("a")
    picker.release("a")
    picker.release("b")
    assert picker.acquire(ABC, key=key) == "b"  # remembered
    picker.release("b")
    picker.acquire(ABC, key="another prompt")
    picker.acquire(ABC, key="a third prompt")  # two newer keys: the first is forgotten
    for address in ABC:
        while picker.pending(address):
            picker.release(address)
    assert picker.acquire(ABC, key=key) == "a"  # afresh: its home, idle
    picker.release("a")
    assert picker.acquire(["b", "c"], key=key) == "b"  # owner a gone: next in order, remembered
    picker.release("b")
    assert picker.acquire(ABC, key=key) == "b"
