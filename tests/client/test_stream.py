"""Streaming: failover before the first event, a surfaced error after it; sync and async."""

from __future__ import annotations

import pytest

from sax.client import AsyncModel, Model
from sax.errors import Code, SaxError
from tests.client.fakes import FakeCell


def test_stream_accumulates_text_and_final_samples(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    stream = m.lm.generate_stream("the quick fox")
    pieces = [chunk.items[0].text for chunk in stream]
    assert pieces == ["the", " quick", " fox"]
    assert stream.texts == ["the quick fox"]
    assert stream.samples is not None and stream.samples[0].score == -1.25


@pytest.mark.parametrize("mode", ["stream_error_first", "unavailable"])
def test_stream_fails_over_before_the_first_event(cell: FakeCell, mode: str) -> None:
    cell.replicas[0].mode = mode
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    for _ in range(20):
        stream = m.lm.generate_stream("a b")
        assert [c.items[0].text for c in stream] == ["a", " b"]
        assert stream.texts == ["a b"]
    assert cell.replicas[1].served == 20


def test_stream_error_after_the_first_event_reaches_the_caller(cell: FakeCell) -> None:
    for r in cell.replicas:
        r.mode = "stream_error_mid"
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    stream = m.lm.generate_stream("a b c")
    received = []
    with pytest.raises(SaxError) as info:
        for chunk in stream:
            received.append(chunk.items[0].text)
    assert received == ["a"]  # no retry once text was delivered: it would repeat it
    assert info.value.code == Code.UNAVAILABLE
    assert "engine died" in info.value.message


async def test_async_generate_score_and_failover(cell: FakeCell) -> None:
    cell.replicas[0].mode = "unavailable"
    m = AsyncModel("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    for _ in range(10):
        assert await m.lm.generate("async") == [("async", 0.0)]
    assert await m.lm.score("p", ["ab"]) == [-2.0]
    assert await m.lm.embed("xy") == [0.5, 0.25, 2.0]
    assert cell.replicas[1].served == 12


async def test_async_stream_fails_over_before_first_event(cell: FakeCell) -> None:
    cell.replicas[0].mode = "stream_error_first"
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10).aio
    for _ in range(5):
        async with m.lm.generate_stream("x y z") as stream:
            assert [c.items[0].text async for c in stream] == ["x", " y", " z"]
        assert stream.texts == ["x y z"]
        assert stream.samples is not None and stream.samples[0].text == "x y z"


async def test_async_unknown_model_is_not_found(cell: FakeCell) -> None:
    m = AsyncModel("/sax/test/nope", sax_root=cell.sax_root, timeout=10)
    with pytest.raises(SaxError) as info:
        await m.lm.generate("q")
    assert info.value.code == Code.NOT_FOUND
