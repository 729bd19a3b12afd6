"""One streamed generation, shared by the SSE route and the OpenAI streaming routes.

`GenerateStream.start` admits the request and waits for the first chunk *before* any response
byte is sent, so that every early failure (admission, bad input, engine refusal) is an ordinary
4xx/5xx JSON response and a client can fail over to another replica. After that, `chunks()`
yields the engine's chunks under the request's deadline; errors from then on are the caller's to
send in-band.

Chunk semantics (as the engines emit them): a `StreamItem` carries a text delta (the full text is
``acc[:prefix_len] + text``) and `score`, the sample's cumulative log-probability so far; a
final sample takes its last score, its last `num_tokens` (the chunk count when an engine
does not report one) and the engine's `finish_reason` from its last item.

`close()` is idempotent and runs from `chunks()`'s ``finally`` and from the response's
background task, so the admission slot is released and the engine iterator closed (aborting the
engine request) however the response ends: finished, failed, or the client went away.

On the wire a stream is sse-starlette `ServerSentEvent`s separated by ``\n``: `sax_events` for
``lm.generate_stream`` (``event: chunk``, then ``done`` or ``error``), the OpenAI routes'
``data:`` lines in `sax.server.openai.stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from sse_starlette import ServerSentEvent

from sax.errors import SaxError, internal
from sax.generation import Sample, SamplingOptions, StreamItem, TextFold, TokenLogprob
from sax.request_errors import public_params
from sax.schemas import StreamChunk, StreamDone
from sax.server.admission import Gate, Receive, cancelled_on_disconnect
from sax.server.servable import Servable

log = logging.getLogger(__name__)

SEP = "\n"  # between the lines of an event, and after it


def sse_event(data: str, event: str | None = None) -> ServerSentEvent:
    """``event: <event>`` (when given) and ``data: <data>`` lines; `data` is one line of JSON."""
    return ServerSentEvent(data, event=event, sep=SEP)


@dataclass(frozen=True)
class EventStream:
    """A started stream's events, and `close`, which the response runs however it ends."""

    events: AsyncIterator[ServerSentEvent]
    close: Callable[[], Awaitable[None]]


class GenerateStream:
    def __init__(
        self, gate: Gate, servable: Servable, text: str, options: SamplingOptions, timeout_s: float
    ) -> None:
        self.gate = gate
        self.servable = servable
        self.text = text
        self.options = options
        self.timeout_s = timeout_s
        self._it: AsyncIterator[list[StreamItem]] | None = None
        self._first: list[StreamItem] | None = None
        self._deadline = 0.0
        self._start = 0.0
        self._admitted = False
        self._closed = False
        n = options.num_samples
        self._texts = [TextFold() for _ in range(n)]
        self._scores = [0.0] * n
        self._tokens = [0] * n
        self._finish: list[str | None] = [None] * n
        self._logprobs: list[list[TokenLogprob] | None] = [None] * n

    async def start(self, receive: Receive | None = None) -> None:
        """Admits and fetches the first chunk; raises SaxError before any byte is sent."""
        self._start = self.gate.admit()
        self._admitted = True
        self._deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            self._it = self.servable.generate_stream(self.text, self.options)
            with cancelled_on_disconnect(receive):
                self._first = await self._next()
        except BaseException:
            await self.close(ok=False)
            raise

    async def _next(self) -> list[StreamItem] | None:
        assert self._it is not None
        try:
            async with asyncio.timeout_at(self._deadline) as scope:
                return await anext(self._it)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if scope.expired():
                raise self.gate.deadline_error(self.timeout_s) from None
            raise

    async def chunks(self) -> AsyncIterator[list[StreamItem]]:
        """The chunks from the first on; the accumulated samples are in `samples()` after."""
        ok = False
        try:
            chunk = self._first
            self._first = None
            while chunk is not None:
                self._accumulate(chunk)
                yield chunk
                chunk = await self._next()
            ok = True
        finally:
            await self.close(ok)

    def _accumulate(self, chunk: list[StreamItem]) -> None:
        texts, scores, tokens = self._texts, self._scores, self._tokens
        for item in chunk:
            i = item.index
            if i >= len(texts):
                grow = i + 1 - len(texts)
                texts.extend(TextFold() for _ in range(grow))
                scores.extend([0.0] * grow)
                tokens.extend([0] * grow)
                self._finish.extend([None] * grow)
                self._logprobs.extend([None] * grow)
            texts[i].apply(item.prefix_len, item.text)
            scores[i] = item.score
            # Engines may merge several tokens into one delta when the reader lags; trust their
            # count when they give one.
            tokens[i] = item.num_tokens or tokens[i] + 1
            if item.finish_reason is not None:
                self._finish[i] = item.finish_reason
            if item.logprobs is not None:
                self._logprobs[i] = (self._logprobs[i] or []) + item.logprobs

    def samples(self) -> list[Sample]:
        """The finished samples; `finish_reason` is the engine's, else inferred from the
        token count for engines that do not report one."""
        limit = self.options.max_decode_steps
        return [
            Sample(
                text=text.text,
                score=score,
                num_tokens=n,
                finish_reason=finish or ("length" if n >= limit else "stop"),
                logprobs=logprobs,
            )
            for text, score, n, finish, logprobs in zip(
                self._texts, self._scores, self._tokens, self._finish, self._logprobs, strict=True
            )
        ]

    async def close(self, ok: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        it, self._it = self._it, None
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if self._admitted:
            self.gate.release(self._start, ok)


async def sax_events(
    stream: GenerateStream, names: Mapping[str, str]
) -> AsyncIterator[ServerSentEvent]:
    """``lm.generate_stream``'s events: ``chunk`` (a `StreamChunk`) per engine step, then ``done``
    (a `StreamDone`), or ``error`` (an `ErrorBody`, public field names) once it failed."""
    try:
        with public_params(names):
            async for chunk in stream.chunks():
                yield sse_event(StreamChunk(items=chunk).model_dump_json(), "chunk")
            yield sse_event(StreamDone(samples=stream.samples()).model_dump_json(), "done")
    except SaxError as exc:
        yield sse_event(json.dumps(exc.to_body()), "error")
    except Exception as exc:
        err = internal(exc, f"stream of {stream.gate.model_id}", log)
        yield sse_event(json.dumps(err.to_body()), "error")
