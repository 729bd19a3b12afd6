"""`Model`: the blocking client of one published model, called directly on its replicas.

    m = sax.Model("/sax/test/echo")           # sax_root from the argument or SAX_ROOT
    m.lm.generate("hi")                       # [(text, score), ...], like Saxml's Python client
    m.lm.generate_samples("hi")               # [Sample(text, score, num_tokens, finish_reason)]
    for chunk in (s := m.lm.generate_stream("hi")): ...   # then s.texts, s.samples
    m.lm.score("prefix", ["a", "b"]); m.lm.embed("text"); m.lm.gradient("p", "s")
    m.vm.classify(png); m.vm.embed(png); m.vm.detect(png); m.vm.generate("a cat")
    await m.aio.lm.generate("hi")             # the same calls for asyncio (sax.client.AsyncModel)

Every call has a deadline: `timeout` per call, else the model's `timeout`, else none (Saxml's
default: retry until it works). Until then, retryable failures (UNAVAILABLE, RESOURCE_EXHAUSTED,
NOT_FOUND from a replica still loading; a refused or dropped connection counts as UNAVAILABLE)
are retried with jittered backoff on another replica. A stream fails over only before its first
event reaches the caller; afterwards an error is raised to the caller, who has already seen text.

Replica addresses come from a background WatchLoc thread per (sax_root, model) in the process,
shared by every `Model` of that id; the first call waits for its first answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import httpx

from sax.client import http, wire
from sax.client.admin import AdminClient, resolve_sax_root
from sax.client.attempts import Attempts
from sax.client.credentials import auth_headers
from sax.client.locations import Watcher
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

if TYPE_CHECKING:
    from sax.client.async_model import AsyncModel


class _Watchers:
    """One WatchLoc thread per (sax_root, model) in the process; a finished one is replaced on
    the next call, so a model published again after a NOT_FOUND is found again."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, ModelId], Watcher] = {}
        self._lock = threading.Lock()

    def get(self, sax_root: str, model: ModelId) -> Watcher:
        key = (sax_root, model)
        with self._lock:
            watcher = self._by_key.get(key)
            if watcher is None or watcher.done:
                watcher = Watcher(AdminClient(sax_root, model.cell_id), model)
                self._by_key[key] = watcher
            return watcher

    def close(self) -> None:
        with self._lock:
            for watcher in self._by_key.values():
                watcher.stop()
            self._by_key.clear()


WATCHERS = _Watchers()


def close() -> None:
    """Stops every background watcher of the sync API (they are daemon threads; this is for
    tests and long-lived processes that drop models)."""
    WATCHERS.close()


class Model:
    """A published model; cheap to create (no network until the first call), thread-safe."""

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
        self.lm = LM(self)
        self.vm = VM(self)
        self._aio: AsyncModel | None = None

    def __repr__(self) -> str:
        return f"Model({str(self.model_id)!r})"

    @property
    def aio(self) -> AsyncModel:
        """The asyncio twin of this model (same id, root and timeout)."""
        if self._aio is None:
            from sax.client.async_model import AsyncModel

            self._aio = AsyncModel(
                str(self.model_id), sax_root=self.sax_root, timeout=self.timeout, token=self.token
            )
        return self._aio

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline.after(self.timeout if timeout is None else timeout)

    def replicas(self, timeout: float | None = None) -> tuple[str, ...]:
        """The ready replica addresses this process knows (after the first WatchLoc answer)."""
        watcher = self._watcher(self.deadline(timeout))
        return watcher.replicas.addresses

    def _watcher(self, deadline: Deadline) -> Watcher:
        watcher = WATCHERS.get(self.sax_root, self.model_id)
        if not watcher.wait_first(deadline):
            raise deadline.exceeded(f"finding replicas of {self.model_id}", None)
        return watcher

    def call(self, method: str, body: bytes, deadline: Deadline, key: str | None = None) -> bytes:
        """POSTs `body` to ``method`` on a replica, failing over until `deadline`; the raw reply.
        `key`: the prompt text whose prefix picks the replica (`sax.client.picker`)."""
        attempts = Attempts(
            f"{method} on {self.model_id}", self._watcher(deadline).replicas, deadline, key
        )
        path = wire.data_path(self.model_id.name, method)
        client = http.sync_client()
        while True:
            address = attempts.pick()
            if address is not None:
                try:
                    response = client.post(
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
            time.sleep(attempts.delay())

    def stream(
        self, method: str, body: bytes, deadline: Deadline, key: str | None = None
    ) -> Iterator[StreamChunk | StreamDone]:
        """Streams ``method``'s events from a replica, failing over until the first event."""
        attempts = Attempts(
            f"{method} on {self.model_id}", self._watcher(deadline).replicas, deadline, key
        )
        path = wire.data_path(self.model_id.name, method)
        client = http.sync_client()
        while True:
            address = attempts.pick()
            if address is not None:
                delivered = False
                try:
                    with client.stream(
                        "POST",
                        f"http://{address}{path}",
                        content=body,
                        headers=self.headers,
                        timeout=http.timeout(deadline.remaining()),
                    ) as response:
                        if not response.is_success:
                            response.read()
                            raise http.error_from_response(response.status_code, response.content)
                        parser = SSEParser()
                        for line in response.iter_lines():
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
            time.sleep(attempts.delay())


class GenerateStream(Iterator[StreamChunk]):
    """Iterates a generation's chunks; `texts` holds each sample's text so far, and `samples`
    the final samples (with scores) once iteration ends."""

    def __init__(self, events: Iterator[StreamChunk | StreamDone]) -> None:
        self._events = events
        self._state = wire.StreamState()

    @property
    def texts(self) -> list[str]:
        return self._state.texts

    @property
    def samples(self) -> list[Sample] | None:
        return self._state.samples

    def __iter__(self) -> GenerateStream:
        return self

    def __next__(self) -> StreamChunk:
        item = next(self._events)
        if isinstance(item, StreamDone):
            self._state.finish(item)
            raise StopIteration
        self._state.apply(item)
        return item

    def close(self) -> None:
        """Abandons the stream (closes its connection; the server aborts the generation)."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


class LM:
    """Language-model methods (Saxml's ``LanguageModel``)."""

    def __init__(self, model: Model) -> None:
        self._model = model

    def generate(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[tuple[str, float]]:
        return [(s.text, s.score) for s in self.generate_samples(text, extra_inputs, timeout)]

    def generate_samples(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[Sample]:
        deadline = self._model.deadline(timeout)
        body = wire.generate_body(text, extra_inputs, deadline.remaining())
        raw = self._model.call("lm.generate", body, deadline, prefix_key(text))
        return GenerateResponse.model_validate_json(raw).samples

    def generate_stream(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> GenerateStream:
        deadline = self._model.deadline(timeout)
        body = wire.generate_body(text, extra_inputs, deadline.remaining())
        return GenerateStream(
            self._model.stream("lm.generate_stream", body, deadline, prefix_key(text))
        )

    def score(
        self,
        prefix: str,
        suffixes: str | Sequence[str],
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        """log P(suffix | prefix) for each suffix."""
        deadline = self._model.deadline(timeout)
        body = wire.score_body(prefix, suffixes, extra_inputs, deadline.remaining())
        return ScoreResponse.model_validate_json(
            self._model.call("lm.score", body, deadline, prefix_key(prefix))
        ).scores

    def embed(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[float]:
        deadline = self._model.deadline(timeout)
        body = wire.embed_body(text, extra_inputs, deadline.remaining())
        return EmbedResponse.model_validate_json(
            self._model.call("lm.embed", body, deadline)
        ).embedding

    def gradient(
        self,
        prefix: str,
        suffix: str,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> GradientResponse:
        deadline = self._model.deadline(timeout)
        body = wire.gradient_body(prefix, suffix, extra_inputs, deadline.remaining())
        return GradientResponse.model_validate_json(self._model.call("lm.gradient", body, deadline))


class VM:
    """Vision-model methods (Saxml's ``VisionModel``); images are encoded bytes (PNG, JPEG, ...)."""

    def __init__(self, model: Model) -> None:
        self._model = model

    def classify(
        self,
        image: bytes,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (label, probability), best first; extra input ``top_k``."""
        deadline = self._model.deadline(timeout)
        body = wire.classify_body(image, extra_inputs, deadline.remaining())
        return wire.vm_classify(self._model.call("vm.classify", body, deadline))

    def embed(
        self,
        image: bytes,
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[float]:
        deadline = self._model.deadline(timeout)
        body = wire.image_embed_body(image, extra_inputs, deadline.remaining())
        return wire.vm_embed(self._model.call("vm.embed", body, deadline))

    def generate(
        self, text: str, extra_inputs: wire.ExtraInputs | None = None, timeout: float | None = None
    ) -> list[tuple[bytes, float]]:
        """Text to images: (PNG bytes, score) per image; extra inputs ``num_samples``, ``seed``."""
        deadline = self._model.deadline(timeout)
        body = wire.text_to_image_body(text, extra_inputs, deadline.remaining())
        return wire.vm_generate(self._model.call("vm.generate", body, deadline))

    def detect(
        self,
        image: bytes,
        text: Sequence[str] = (),
        extra_inputs: wire.ExtraInputs | None = None,
        timeout: float | None = None,
    ) -> list[BoundingBox]:
        """Boxes (cx, cy, w, h in pixels; text; score), best first; extra ``score_threshold``."""
        deadline = self._model.deadline(timeout)
        body = wire.detect_body(image, text, extra_inputs, deadline.remaining())
        return wire.vm_detect(self._model.call("vm.detect", body, deadline))
