"""`TextFold`: a sample's text folded from stream deltas, as the model server and client do."""

from __future__ import annotations

import pytest

from sax.generation import TextFold


def test_appends_and_reads_the_whole_text() -> None:
    fold = TextFold()
    assert fold.text == "" and fold.length == 0
    for i, piece in enumerate(["Once", " upon", "", " a time"]):
        fold.apply(fold.length, piece)
        if i == 1:
            assert fold.text == "Once upon"
    assert fold.text == "Once upon a time"
    assert fold.length == len("Once upon a time")


def test_a_rewind_replaces_the_tail_and_later_appends_follow_it() -> None:
    fold = TextFold()
    fold.apply(0, "hello")
    fold.apply(4, "p!")  # the engine took back "o"
    assert fold.text == "hellp!"
    fold.apply(6, " ok")
    fold.apply(0, "new")  # a rewind to the start
    assert fold.text == "new" and fold.length == 3


@pytest.mark.parametrize("prefix_len", [-1, 6])
def test_a_prefix_outside_the_text_is_refused(prefix_len: int) -> None:
    fold = TextFold()
    fold.apply(0, "hello")
    with pytest.raises(ValueError, match=f"prefix_len {prefix_len}"):
        fold.apply(prefix_len, "x")
    assert fold.text == "hello"


def test_a_long_stream_keeps_every_delta_in_order() -> None:
    fold = TextFold()
    pieces = [f"<{i}>" for i in range(5000)]
    for piece in pieces:
        fold.apply(fold.length, piece)
    assert fold.text == "".join(pieces)
