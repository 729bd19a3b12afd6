"""The work behind the Saxml data API (``lm.*``, ``vm.*``): look up, admit, run, answer.

`DATA_METHODS` lists the unary methods, each as the servable call it makes and the response it
builds; `DataServing.unary` runs any of them and `DataServing.generate_stream` starts
``lm.generate_stream``. The routes (`sax.server.routes.data`) only translate HTTP.

Every call: the replica is looked up (NOT_FOUND when not loaded here, so clients retry another
replica), `gates` checks its ACL, the servable call is built (bad input fails here, before
admission), then it runs under admission (one request of `cost` items), the request's deadline
(`timeout_s`, else the server's default) and cancellation when the client disconnects. Errors
name the public field (``extra_inputs.temperature``, ``text``) through `public_params`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel

from sax.request_errors import public_params
from sax.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    DetectRequest,
    DetectResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    GradientRequest,
    GradientResponse,
    ImageEmbedRequest,
    ScoreRequest,
    ScoreResponse,
    TextToImageRequest,
    TextToImageResponse,
)
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.manager import ModelServer
from sax.server.sampling import extra_input_names, no_extra_inputs
from sax.server.servable import Servable
from sax.server.streaming import EventStream, GenerateStream, sax_events
from sax.server.vision import VisionServable, as_vision

EngineCall = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class DataMethod:
    """One unary data method: `call(servable, body)` builds its engine call, `respond(result)`
    its response; `params(body)` renames internal fields in errors, `cost(body)` is its
    admission size, and a method that takes no extra inputs refuses any."""

    method: str  # "lm.score": the ACL key and the route's last path segment
    request: type[BaseModel]
    response: type[BaseModel]
    call: Callable[[Servable, Any], EngineCall]
    respond: Callable[[Any], BaseModel]
    params: Callable[[Any], Mapping[str, str]] = field(default=lambda _: {})
    cost: Callable[[Any], int] = field(default=lambda _: 1)
    takes_extra_inputs: bool = True

    @property
    def name(self) -> str:
        """The route's name: ``score`` for ``lm.score``, ``vm_classify`` for ``vm.classify``."""
        return self.method.removeprefix("lm.").replace(".", "_")

    @property
    def operation_id(self) -> str | None:
        """``vm_*`` for the vision methods; FastAPI derives the ``lm.*`` ones from the name."""
        return self.name if self.method.startswith("vm.") else None


def _vision(
    method: str,
    request: type[BaseModel],
    response: type[BaseModel],
    call: Callable[[VisionServable, Any], EngineCall],
    respond: Callable[[Any], BaseModel],
) -> DataMethod:
    """A ``vm.*`` method: served by a `VisionServable` that lists it, else UNIMPLEMENTED."""
    return DataMethod(
        method, request, response, lambda s, b: call(as_vision(s, method), b), respond
    )


DATA_METHODS: tuple[DataMethod, ...] = (
    DataMethod(
        "lm.generate",
        GenerateRequest,
        GenerateResponse,
        lambda s, b: partial(s.generate, s.lm_prompt(b.text), s.sampling(b.extra_inputs)),
        lambda samples: GenerateResponse(samples=samples),
        params=lambda b: extra_input_names(b.extra_inputs, prompt="text"),
    ),
    DataMethod(
        "lm.score",
        ScoreRequest,
        ScoreResponse,
        lambda s, b: partial(s.score, b.prefix, b.suffixes, b.extra_inputs),
        lambda scores: ScoreResponse(scores=scores),
        params=lambda _: {"prompt": "suffixes"},
        cost=lambda b: len(b.suffixes),
        takes_extra_inputs=False,
    ),
    DataMethod(
        "lm.embed",
        EmbedRequest,
        EmbedResponse,
        lambda s, b: partial(s.embed, b.text, b.extra_inputs),
        lambda vector: EmbedResponse(embedding=vector),
        params=lambda _: {"prompt": "text"},
        takes_extra_inputs=False,
    ),
    DataMethod(
        "lm.gradient",
        GradientRequest,
        GradientResponse,
        lambda s, b: partial(s.gradient, b.prefix, b.suffix, b.extra_inputs),
        lambda result: result,
        takes_extra_inputs=False,
    ),
    _vision(
        "vm.classify",
        ClassifyRequest,
        ClassifyResponse,
        lambda v, b: partial(v.classify, b.image_bytes, b.extra_inputs),
        lambda texts: ClassifyResponse(texts=texts),
    ),
    _vision(
        "vm.embed",
        ImageEmbedRequest,
        EmbedResponse,
        lambda v, b: partial(v.embed_image, b.image_bytes, b.extra_inputs),
        lambda vector: EmbedResponse(embedding=vector),
    ),
    _vision(
        "vm.generate",
        TextToImageRequest,
        TextToImageResponse,
        lambda v, b: partial(v.text_to_image, b.text, b.extra_inputs),
        lambda images: TextToImageResponse(images=images),
    ),
    _vision(
        "vm.detect",
        DetectRequest,
        DetectResponse,
        lambda v, b: partial(v.detect, b.image_bytes, b.text, b.extra_inputs),
        lambda boxes: DetectResponse(bounding_boxes=boxes),
    ),
)


class DataServing:
    """The data API over a `ModelServer`'s loaded replicas."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.timeout_s = server.opts.default_timeout_s

    async def unary(
        self,
        spec: DataMethod,
        name: str,
        body: Any,
        gates: GateFor,
        receive: Receive | None = None,
    ) -> BaseModel:
        """Runs `spec` on model `name` (short or full id); returns its response model."""
        if not spec.takes_extra_inputs:
            no_extra_inputs(body.extra_inputs, spec.method)
        with public_params(spec.params(body)):
            replica = self.server.loaded(name)
            gate = gates(replica, spec.method)
            call = spec.call(replica.servable, body)
            timeout = body.timeout_s or self.timeout_s
            result = await gate.run(call, timeout, receive, spec.cost(body))
        return spec.respond(result)

    async def generate_stream(
        self, name: str, body: GenerateRequest, gates: GateFor, receive: Receive | None = None
    ) -> EventStream:
        """Admits and starts ``lm.generate_stream``: every failure up to the engine's first
        chunk raises (an ordinary error response); later ones are the stream's ``error``."""
        replica = self.server.loaded(name)
        gate = gates(replica, "lm.generate_stream")
        servable = replica.servable
        names = extra_input_names(body.extra_inputs, prompt="text")
        with public_params(names):
            options = servable.sampling(body.extra_inputs)
            prompt = servable.lm_prompt(body.text)
            timeout = body.timeout_s or self.timeout_s
            stream = GenerateStream(gate, servable, prompt, options, timeout)
            await stream.start(receive)
        return EventStream(sax_events(stream, names), stream.close)
