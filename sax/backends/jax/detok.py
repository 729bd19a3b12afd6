"""Incremental detokenization with stop strings, for streamed text deltas.

Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and
decoding the whole sequence every step is quadratic. `TextStream` keeps a small window
(the prefix/read offsets used by TGI and vLLM): it decodes the tokens since the last stable
point and only appends text once it no longer ends in a partial character (U+FFFD).

Stop strings are matched on the decoded text. Text that could still become a stop string is held
back from the stream until it either completes the stop (and is cut) or stops matching, so a
client never sees text that the final result does not contain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""  # everything decoded so far (cut at a stop string once one matched)
        self.emitted = 0  # characters handed out by `take`
        self.stopped = False

    def push(self, token: int) -> None:
        """Adds a sampled token; sets `stopped` (and cuts `text`) when a stop string completes."""
        if self.stopped:
            return
        self._ids.append(token)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            before = len(self.text)
            self.text += full[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            self._check_stop(before)

    def flush(self) -> None:
        """Appends tokens still held as a partial character (the sequence has ended)."""
        if self.stopped or self._read_offset == len(self._ids):
            return
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        before = len(self.text)
        self.text += full[len(prefix) :]
        self._prefix_offset = self._read_offset = len(self._ids)
        self._check_stop(before)

    def _check_stop(self, before: int) -> None:
        if not self._stop:
            return
        longest = max(len(s) for s in self._stop)
        start = max(0, before - longest + 1)
        hits = [i for s in self._stop if (i := self.text.find(s, start)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _held(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def take(self, final: bool = False) -> str:
        """The text not yet handed out that can no longer change (everything, when final)."""
        end = len(self.text) if final or self.stopped else len(self.text) - self._held()
        delta = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted += len(delta)
        return delta
