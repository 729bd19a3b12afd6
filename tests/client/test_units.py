"""Pure pieces of the client: backoff, replica choice, WatchLoc folding, SSE parsing."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from httpx_sse import EventSource

from sax.client.locations import ReplicaSet, print_changes
from sax.client.picker import Picker
from sax.client.retry import MAX_DELAY_S, MIN_ATTEMPT_S, Backoff, Deadline, transport_code
from sax.client.wire import StreamState, read_events
from sax.errors import Code, SaxError
from sax.generation import StreamItem
from sax.schemas import StreamChunk, WatchResult


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = Backoff(Deadline(None))
    delays = [backoff.next_delay() for _ in range(40)]
    assert all(d is not None and 0 < d <= MAX_DELAY_S * 1.5 for d in delays)
    assert delays[0] is not None and delays[0] <= 0.015
    assert sum(d or 0 for d in delays[-5:]) > 2.0  # reached the cap


def test_backoff_stops_at_the_deadline() -> None:
    backoff = Backoff(Deadline.after(0.05))
    total = 0.0
    while (delay := backoff.next_delay()) is not None:
        assert total + delay <= 0.05
        time.sleep(delay)
        total += delay
    assert Deadline.after(0).remaining() is None  # <= 0 means no deadline, like Saxml's -1


def test_a_deadline_is_spent_when_no_attempt_fits() -> None:
    assert not Deadline(None).spent()
    assert not Deadline.after(1).spent()
    assert Deadline(time.monotonic() + MIN_ATTEMPT_S / 2).spent()
    assert Deadline(time.monotonic() - 1).spent()


@pytest.mark.parametrize(
    ("kind", "spent", "code"),
    [
        ("ConnectTimeout", False, Code.UNAVAILABLE),  # the peer's: try another replica
        ("ConnectTimeout", True, Code.DEADLINE_EXCEEDED),  # the deadline cut the connect short
        ("ReadTimeout", False, Code.DEADLINE_EXCEEDED),
        ("ReadTimeout", True, Code.DEADLINE_EXCEEDED),
        ("WriteTimeout", False, Code.DEADLINE_EXCEEDED),
        ("PoolTimeout", True, Code.DEADLINE_EXCEEDED),
        ("ConnectError", False, Code.UNAVAILABLE),
        ("ConnectError", True, Code.UNAVAILABLE),
        ("ReadError", True, Code.UNAVAILABLE),
        ("RemoteProtocolError", False, Code.UNAVAILABLE),
    ],
)
def test_transport_code_blames_the_deadline_only_for_its_own_timeouts(
    kind: str, spent: bool, code: Code
) -> None:
    assert transport_code(kind, spent) == code


def test_replica_set_full_set_replaces_and_changelog_applies_in_order() -> None:
    replicas = ReplicaSet()
    replicas.apply(WatchResult(admin_id="a", next_seqno=2, has_fullset=True, values=["x", "y"]))
    assert replicas.addresses == ("x", "y")
    replicas.apply(
        WatchResult.model_validate(
            {
                "admin_id": "a",
                "next_seqno": 5,
                "changelog": [
                    {"op": "add", "address": "z"},
                    {"op": "del", "address": "x"},
                    {"op": "del", "address": "z"},
                    {"op": "add", "address": "w"},
                ],
            }
        )
    )
    assert replicas.addresses == ("w", "y")
    # A new admin's full set drops what the old one had told us (no stale entries).
    replicas.apply(
        WatchResult.model_validate(
            {
                "admin_id": "b",
                "next_seqno": 1,
                "has_fullset": True,
                "values": ["q"],
                "changelog": [{"op": "add", "address": "r"}],
            }
        )
    )
    assert replicas.addresses == ("q", "r")


def test_watch_printer_matches_saxutil_format() -> None:
    lines: list[str] = []
    printer = print_changes(lines.append)
    printer(WatchResult(admin_id="a", next_seqno=1, has_fullset=True, values=["b:2", "a:1"]))
    printer(
        WatchResult.model_validate(
            {"admin_id": "a", "next_seqno": 3, "changelog": [{"op": "del", "address": "a:1"}]}
        )
    )
    assert lines == ["Reset", "+ a:1", "+ b:2", "- a:1"]


def test_picker_prefers_the_replica_with_fewer_requests_in_flight() -> None:
    picker = Picker()
    busy = [picker.acquire(["a"]) for _ in range(3)]
    assert busy == ["a", "a", "a"]
    assert {picker.acquire(["a", "b"]) for _ in range(3)} == {"b"}  # b: 0,1,2 in flight < a's 3
    for _ in range(3):
        picker.release("a")
    assert picker.pending("a") == 0 and picker.pending("b") == 3


def test_picker_skips_ejected_and_avoided_replicas_unless_nothing_is_left() -> None:
    picker = Picker()
    picker.eject("a")
    assert {picker.acquire(["a", "b"]) for _ in range(20)} == {"b"}
    assert picker.acquire(["a", "b"], avoid={"b"}) == "a"
    assert picker.acquire(["a"]) == "a"  # better to try than to fail without trying
    assert picker.acquire([]) is None


def test_picker_spreads_load_evenly() -> None:
    # Seeded, so the draw is repeatable; uniform random picks would spread ~±15 here, power of
    # two choices stays within a few requests.
    saved = random.getstate()
    random.seed(7)
    try:
        picker = Picker()
        counts = {a: 0 for a in "abcd"}
        for _ in range(400):
            choice = picker.acquire(list(counts))
            assert choice is not None
            counts[choice] += 1
    finally:
        random.setstate(saved)
    assert max(counts.values()) - min(counts.values()) <= 3  # nothing released: pure balance


def test_sse_parser_dispatches_on_blank_lines_and_ignores_comments() -> None:
    # The parser the client reads streams with (httpx-sse, `sax.client.wire.read_events`).
    lines = [": ping", "event: chunk", 'data: {"a":', "data: 1}", "", "", "data: x", ""]
    response = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content="".join(f"{line}\n" for line in lines).encode(),
    )
    got = [(e.event, e.data) for e in EventSource(response).iter_sse()]
    assert got == [("chunk", '{"a":\n1}'), ("message", "x")]


async def test_stream_events_skip_unknown_events_and_raise_error_events() -> None:
    chunk = '{"items": [{"index": 0, "text": "a", "prefix_len": 0, "score": 0}]}'
    body = (
        f": ping\nevent: chunk\ndata: {chunk}\n\nevent: future\ndata: {{}}\n\n"
        'event: done\ndata: {"samples": [{"text": "a", "score": -1}]}\n\n'
    )
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    items = [item async for item in read_events(response)]
    assert [type(item).__name__ for item in items] == ["StreamChunk", "StreamDone"]
    failing = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content='event: error\ndata: {"error": {"code": "UNAVAILABLE", "message": "died"}}\n\n',
    )
    with pytest.raises(SaxError) as info:
        _ = [item async for item in read_events(failing)]
    assert info.value.code == Code.UNAVAILABLE


def test_stream_state_honours_prefix_len() -> None:
    state = StreamState()
    state.apply(StreamChunk(items=[StreamItem(index=0, text="hello", prefix_len=0, score=0)]))
    state.apply(StreamChunk(items=[StreamItem(index=1, text="b", prefix_len=0, score=0)]))
    state.apply(StreamChunk(items=[StreamItem(index=0, text="p!", prefix_len=4, score=0)]))
    assert state.texts == ["hellp!", "b"]


@pytest.mark.parametrize("prefix_len", [-1, 7])
def test_stream_state_refuses_a_prefix_outside_the_result(prefix_len: int) -> None:
    state = StreamState()
    state.apply(StreamChunk(items=[StreamItem(index=0, text="hello", prefix_len=0, score=0)]))
    bad = StreamItem(index=0, text="x", prefix_len=prefix_len, score=0)
    with pytest.raises(SaxError) as info:
        state.apply(StreamChunk(items=[bad]))
    assert info.value.code == Code.INTERNAL and f"prefix_len {prefix_len}" in str(info.value)
    assert state.texts == ["hello"]
