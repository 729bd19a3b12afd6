"""`AsyncModel`: one published model, called directly on its replicas; the client's one
implementation of discovery, replica choice, failover and streaming (`sax.Model` runs it for
blocking callers).

    m = sax.client.AsyncModel("/sax/test/echo")    # or sax.Model(...).aio
    await m.lm.generate("hi")                      # [(text, score), ...]
    async with m.lm.generate_stream("hi") as stream:
        async for chunk in stream: ...             # then stream.texts, stream.samples
    await m.lm.score("prefix", ["a", "b"]); await m.lm.embed("text"); await m.lm.gradient("p", "s")
    await m.vm.classify(png); await m.vm.embed(png); await m.vm.detect(png); await m.vm.generate("a cat")

Every call has a deadline: `timeout` per call, else the model's `timeout`, else none (Saxml's
default: retry until it works). Until then, retryable failures (UNAVAILABLE, RESOURCE_EXHAUSTED,
NOT_FOUND from a replica still loading; a refused or dropped connection counts as UNAVAILABLE)
are retried with jittered backoff on another replica (`sax.client.attempts`). A stream fails
over only before its first event reaches the caller; afterwards an error is raised to the
caller, who has already seen text.

Replica addresses come from a WatchLoc task of the event loop that first uses the model (an
httpx AsyncClient and its tasks cannot cross loops), shared by every model of that id on the
loop; the first call waits for its first answer.
"""

# The `timeout` parameters mirror the sync API: a deadline shared by all retries of one call,
# which also travels to the server (timeout_s); asyncio.timeout() around a call cannot do that.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TypedDict, Unpack

import httpx

from sax.client import http, wire
from sax.client.admin import resolve_sax_root
from sax.client.attempts import Attempts
from sax.client.credentials import auth_headers
from sax.client.locations import Watcher, Watchers
from sax.client.picker import prefix_key
from sax.client.retry import Deadline
from sax.errors import Code, SaxError
from sax.generation import Sample
from sax.naming import ModelId
from sax.schemas import (
    BoundingBox,
    EmbedResponse,
    GenerateResponse,
    GradientResponse,
    ScoreResponse,
    StreamChunk,
    StreamDone,
)

_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchers] = (
    weakref.WeakKeyDictionary()
)


def watchers() -> Watchers:
    """The WatchLoc watchers of the running loop."""
    loop = asyncio.get_running_loop()
    found = _watchers.get(loop)
    if found is None:
        found = _watchers[loop] = Watchers()
    return found


def close() -> None:
    """Cancels the WatchLoc tasks of the running loop."""
    found = _watchers.pop(asyncio.get_running_loop(), None)
    if found is not None:
        found.stop()


class ModelOptions(TypedDict, total=False):
    """The keyword arguments of `AsyncModel` and `sax.client.Model`."""

    sax_root: str | None  # default: the SAX_ROOT environment variable
    timeout: float | None  # seconds per call, all retries included; None or <= 0: no deadline
    token: str | None  # the bearer token for data calls (default: `sax.client.credentials`)


class AsyncModel:
    """A published model for asyncio callers; cheap to create, no network until the first call."""

    def __init__(self, model_id: str, **options: Unpack[ModelOptions]) -> None:
        self.model_id = ModelId.parse(model_id)
        self.sax_root = resolve_sax_root(options.get("sax_root"))
        self.timeout = options.get("timeout")
        self.token = options.get("token")
        self.headers = auth_headers(self.token, wire.JSON_HEADERS)
        self.lm = AsyncLM(self)
        self.vm = AsyncVM(self)

    def __repr__(self) -> str:
        return f"AsyncModel({str(self.model_id)!r})"

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline.after(self.timeout if timeout is None else timeout)

    async def replicas(self, timeout: float | None = None) -> tuple[str, ...]:
        """The ready replica addresses this loop knows (after the first WatchLoc answer)."""
        return (await self._watcher(self.deadline(timeout))).replicas.addresses

    async def _watcher(self, deadline: Deadline) -> Watcher:
        watcher = watchers().get(self.sax_root, self.model_id)
        if not await watcher.wait_first(deadline):
            raise deadline.exceeded(f"finding replicas of {self.model_id}", None)
        return watcher

    async def call(
        self, method: str, body: bytes, deadline: Deadline, key: str | None = None
    ) -> bytes:
        """POSTs `body` to ``method`` on a replica, failing over until `deadline`; the raw reply.
        `key`: the prompt text whose prefix picks the replica (`sax.client.picker`)."""
        watcher = await self._watcher(deadline)
        attempts = Attempts(f"{method} on {self.model_id}", watcher.replicas, deadline, key)
        path = wire.data_path(self.model_id.name, method)
        client = http.async_client()
        while True:
            address = attempts.pick()
            if address is not None:
                try:
                    response = await client.post(
                        f"http://{address}{path}",
                        content=body,
                        headers=self.headers,
                        timeout=http.timeout(deadline.remaining()),
                    )
                    if response.is_success:
                        return response.content
                    error = http.error_from_response(response.status_code, response.content)
                except httpx.HTTPError as exc:
                    error = http.error_from_transport(exc, address, deadline)
                finally:
                    attempts.release(address)
                attempts.failed(error, address)
            await asyncio.sleep(attempts.delay())

    async def stream(
        self, method: str, body: bytes, deadline: Deadline, key: str | None = None
    ) -> AsyncIterator[StreamChunk | StreamDone]:
        """Streams ``method``'s events from a replica, failing over until the first event."""
        watcher = await self._watcher(deadline)
        attempts = Attempts(f"{method} on {self.model_id}", watcher.replicas, deadline, key)
        path = wire.data_path(self.model_id.name, method)
        client = http.async_client()
        while True:
            address = attempts.pick()
            if address is not None:
                delivered = False
                try:
                    async with client.stream(
                        "POST",
                        f"http://{address}{path}",
                        content=body,
                        headers=self.headers,
                        timeout=http.timeout(deadline.remaining()),
                    ) as response:
                        if not response.is_success:
                            await response.aread()
                            raise http.error_from_response(response.status_code, response.content)
                        async with contextlib.aclosing(wire.read_events(response)) as items:
                            async for item in items:
                                delivered = True
                                yield item
                                if isinstance(item, StreamDone):
                                    return
                    raise SaxError(Code.UNAVAILABLE, f"{address}: stream ended before its result")
                except httpx.HTTPError as exc:
                    error = http.error_from_transport(exc, address, deadline)
                except SaxError as exc:
                    error = exc
                finally:
                    attempts.release(address)
                if delivered:
                    raise error  # the caller has seen text: a retry would repeat it
                attempts.failed(error, address)
            await asyncio.sleep(attempts.delay())


class AsyncGenerateStream(wire.StreamResults, AsyncIterator[StreamChunk]):
    """Iterates a generation's chunks; `texts` holds each sample's text so far, and `samples`
    the final samples (with scores) once iteration ends. Use ``async with`` (or `aclose`) so an
    abandoned stream is closed at once (its connection; the server aborts the generation)."""

    def __init__(self, events: AsyncIterator[StreamChunk | StreamDone]) -> None:
        self._events = events
        self.state = wire.StreamState()

    def __aiter__(self) -> AsyncGenerateStream:
        return self

    async def __anext__(self) -> StreamChunk:
        item = await anext(self._events)
        if isinstance(item, StreamDone):
            self.state.finish(item)
            raise StopAsyncIteration
        self.state.apply(item)
        return item

    async def aclose(self) -> None:
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncGenerateStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncLM:
    """Language-model methods (Saxml's ``LanguageModel``)."""

    def __init__(self, model: AsyncModel) -> None:
        self._model = model

    async def generate(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[tuple[str, float]]:
        samples = await self.generate_samples(text, extra_inputs, timeout)
        return [(s.text, s.score) for s in samples]

    async def generate_samples(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[Sample]:
        deadline = self._model.deadline(timeout)
        body = wire.generate_body(text, extra_inputs, deadline.remaining())
        raw = await self._model.call("lm.generate", body, deadline, prefix_key(text))
        return GenerateResponse.model_validate_json(raw).samples

    def generate_stream(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> AsyncGenerateStream:
        deadline = self._model.deadline(timeout)
        body = wire.generate_body(text, extra_inputs, deadline.remaining())
        events = self._model.stream("lm.generate_stream", body, deadline, prefix_key(text))
        return AsyncGenerateStream(events)

    async def score(
        self,
        prefix: str,
        suffixes: str | Sequence[str],
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        """log P(suffix | prefix) for each suffix."""
        deadline = self._model.deadline(timeout)
        body = wire.score_body(prefix, suffixes, extra_inputs, deadline.remaining())
        raw = await self._model.call("lm.score", body, deadline, prefix_key(prefix))
        return ScoreResponse.model_validate_json(raw).scores

    async def embed(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[float]:
        deadline = self._model.deadline(timeout)
        body = wire.embed_body(text, extra_inputs, deadline.remaining())
        raw = await self._model.call("lm.embed", body, deadline)
        return EmbedResponse.model_validate_json(raw).embedding

    async def gradient(
        self,
        prefix: str,
        suffix: str,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> GradientResponse:
        deadline = self._model.deadline(timeout)
        body = wire.gradient_body(prefix, suffix, extra_inputs, deadline.remaining())
        return GradientResponse.model_validate_json(
            await self._model.call("lm.gradient", body, deadline)
        )


class AsyncVM:
    """Vision-model methods (Saxml's ``VisionModel``); images are encoded bytes (PNG, JPEG, ...)."""

    def __init__(self, model: AsyncModel) -> None:
        self._model = model

    async def classify(
        self,
        image: bytes,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (label, probability), best first; extra input ``top_k``."""
        deadline = self._model.deadline(timeout)
        body = wire.classify_body(image, extra_inputs, deadline.remaining())
        return wire.vm_classify(await self._model.call("vm.classify", body, deadline))

    async def embed(
        self,
        image: bytes,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        deadline = self._model.deadline(timeout)
        body = wire.image_embed_body(image, extra_inputs, deadline.remaining())
        return wire.vm_embed(await self._model.call("vm.embed", body, deadline))

    async def generate(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[tuple[bytes, float]]:
        """Text to images: (PNG bytes, score) per image; extra inputs ``num_samples``, ``seed``."""
        deadline = self._model.deadline(timeout)
        body = wire.text_to_image_body(text, extra_inputs, deadline.remaining())
        return wire.vm_generate(await self._model.call("vm.generate", body, deadline))

    async def detect(
        self,
        image: bytes,
        text: Sequence[str] = (),
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[BoundingBox]:
        """Boxes (cx, cy, w, h in pixels; text; score), best first; extra ``score_threshold``."""
        deadline = self._model.deadline(timeout)
        body = wire.detect_body(image, text, extra_inputs, deadline.remaining())
        return wire.vm_detect(await self._model.call("vm.detect", body, deadline))
