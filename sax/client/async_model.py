"""`AsyncModel`: `Model` for asyncio, with the same methods as coroutines.

    m = sax.client.AsyncModel("/sax/test/echo")    # or sax.Model(...).aio
    await m.lm.generate("hi")
    async with m.lm.generate_stream("hi") as stream:
        async for chunk in stream: ...

The WatchLoc loop is an asyncio task of the event loop that first uses the model (an httpx
AsyncClient and its tasks cannot cross loops), shared by every AsyncModel of that id on the loop.
Retry, failover and deadline rules are those of `sax.client.model`.
"""

# The `timeout` parameters mirror the sync API: a deadline shared by all retries of one call,
# which also travels to the server (timeout_s); asyncio.timeout() around a call cannot do that.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import httpx

from sax.client import http, wire
from sax.client.admin import AsyncAdminClient, resolve_sax_root
from sax.client.attempts import Attempts
from sax.client.credentials import auth_headers
from sax.client.locations import AsyncWatcher
from sax.client.picker import prefix_key
from sax.client.retry import Deadline
from sax.client.sse import SSEParser
from sax.errors import Code, SaxError
from sax.naming import ModelId
from sax.schemas import (
    BoundingBox,
    EmbedResponse,
    GenerateResponse,
    GradientResponse,
    Sample,
    ScoreResponse,
    StreamChunk,
    StreamDone,
)

_watchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, ModelId], AsyncWatcher]
] = weakref.WeakKeyDictionary()


def _watcher_for(sax_root: str, model: ModelId) -> AsyncWatcher:
    by_key = _watchers.setdefault(asyncio.get_running_loop(), {})
    watcher = by_key.get((sax_root, model))
    if watcher is None or watcher.done:
        watcher = AsyncWatcher(AsyncAdminClient(sax_root, model.cell_id), model)
        by_key[(sax_root, model)] = watcher
    return watcher


def close() -> None:
    """Cancels the WatchLoc tasks of the running loop."""
    for watcher in _watchers.pop(asyncio.get_running_loop(), {}).values():
        watcher.stop()


class AsyncModel:
    """A published model for asyncio callers; cheap to create, no network until the first call."""

    def __init__(
        self,
        model_id: str,
        *,
        sax_root: str | None = None,
        timeout: float | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: the bearer token for data calls (default: `sax.client.credentials`)."""
        self.model_id = ModelId.parse(model_id)
        self.sax_root = resolve_sax_root(sax_root)
        self.timeout = timeout
        self.token = token
        self.headers = auth_headers(token, wire.JSON_HEADERS)
        self.lm = AsyncLM(self)
        self.vm = AsyncVM(self)

    def __repr__(self) -> str:
        return f"AsyncModel({str(self.model_id)!r})"

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline.after(self.timeout if timeout is None else timeout)

    async def replicas(self, timeout: float | None = None) -> tuple[str, ...]:
        return (await self._watcher(self.deadline(timeout))).replicas.addresses

    async def _watcher(self, deadline: Deadline) -> AsyncWatcher:
        watcher = _watcher_for(self.sax_root, self.model_id)
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
                    error = http.error_from_transport(exc, address)
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
                        parser = SSEParser()
                        async for line in response.aiter_lines():
                            event = parser.feed(line)
                            item = wire.decode_event(event.event, event.data) if event else None
                            if item is not None:
                                delivered = True
                                yield item
                                if isinstance(item, StreamDone):
                                    return
                    raise SaxError(Code.UNAVAILABLE, f"{address}: stream ended before its result")
                except httpx.HTTPError as exc:
                    error = http.error_from_transport(exc, address)
                except SaxError as exc:
                    error = exc
                finally:
                    attempts.release(address)
                if delivered:
                    raise error  # the caller has seen text: a retry would repeat it
                attempts.failed(error, address)
            await asyncio.sleep(attempts.delay())


class AsyncGenerateStream(AsyncIterator[StreamChunk]):
    """`GenerateStream` for asyncio; use ``async with`` so an abandoned stream is closed at once."""

    def __init__(self, events: AsyncIterator[StreamChunk | StreamDone]) -> None:
        self._events = events
        self._state = wire.StreamState()

    @property
    def texts(self) -> list[str]:
        return self._state.texts

    @property
    def samples(self) -> list[Sample] | None:
        return self._state.samples

    def __aiter__(self) -> AsyncGenerateStream:
        return self

    async def __anext__(self) -> StreamChunk:
        item = await anext(self._events)
        if isinstance(item, StreamDone):
            self._state.finish(item)
            raise StopAsyncIteration
        self._state.apply(item)
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
    """`sax.client.model.LM` as coroutines."""

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
    """`sax.client.model.VM` as coroutines."""

    def __init__(self, model: AsyncModel) -> None:
        self._model = model

    async def classify(
        self,
        image: bytes,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[tuple[str, float]]:
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
        deadline = self._model.deadline(timeout)
        body = wire.detect_body(image, text, extra_inputs, deadline.remaining())
        return wire.vm_detect(await self._model.call("vm.detect", body, deadline))
