"""What every OpenAI-compatible endpoint shares: replica lookup, method checks, streams.

The routes (`sax.server.routes.openai`) only translate HTTP; the ``serving_*.py`` classes
beside this module hold the rest, the way vLLM's ``serving_completion.py``/``serving_chat.py``
sit beside its protocol module. Each takes a request model, a `GateFor` bound to the caller and
the ASGI `receive` (disconnects cancel the engine call; None without a client), and returns a
response model or, for ``stream: true``, an `EventStream`.

- A field sax does not implement is refused by name (`SamplingRequest.refuse_unsupported`); a
  model asked for a kind of work it does not serve is a 400 naming ``model``.
- A request with N prompts or inputs is admitted once, sized N, and its items run in a task
  group: one failure cancels the siblings and is the reply.
- Every error names the public field (``param``): engine errors name a `SamplingOptions` field
  or ``prompt``, renamed by `public_params`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from sax.errors import SaxError, invalid
from sax.generation import SamplingOptions
from sax.schemas import ReplicaStatus
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.manager import ModelServer, Replica
from sax.server.openai.protocol import ModelCard, ModelCardList, SamplingRequest
from sax.server.openai.stream import ChunkWriter, openai_events
from sax.server.servable import Servable
from sax.server.streaming import EventStream, GenerateStream


def require(replica: Replica, method: str, what: str) -> None:
    """INVALID_ARGUMENT naming ``model`` when its servable does not serve `method`."""
    methods = sorted(replica.servable.methods)
    if method not in methods:
        raise invalid(
            f"model {replica.model_id} does not serve {what}; it serves "
            f"{', '.join(methods) or 'nothing'}",
            "model",
        )


class OpenAIServing:
    """The base of the serving classes: a `ModelServer`'s loaded replicas and its default
    request timeout."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.timeout_s = server.opts.default_timeout_s

    def loaded(self, name: str) -> Replica:
        """The loaded replica of model `name`; its NOT_FOUND names ``model``."""
        try:
            return self.server.loaded(name)
        except SaxError as exc:
            exc.param = exc.param or "model"
            raise

    @staticmethod
    def options(servable: Servable, body: SamplingRequest) -> SamplingOptions:
        """The request's sampling, checked by the servable. OpenAI responses carry no Saxml
        score, so the engine is not asked to track one (log-probs only when requested)."""
        return replace(servable.options(body.sampling_values()), score=False)

    async def stream(
        self,
        replica: Replica,
        prompt: str,
        options: SamplingOptions,
        body: SamplingRequest,
        writer: ChunkWriter,
        gates: GateFor,
        receive: Receive | None,
    ) -> EventStream:
        """Admits and starts one generation; every failure up to its first chunk raises."""
        servable = replica.servable
        gate = gates(replica, "lm.generate_stream")
        stream = GenerateStream(gate, servable, prompt, options, self.timeout_s)
        await stream.start(receive)
        events = openai_events(
            stream,
            writer,
            partial(servable.count_tokens, prompt),
            body.include_usage(),
            body.param_names(),
        )
        return EventStream(events, stream.close)

    def model_cards(self) -> ModelCardList:
        """``GET /v1/models``: the LOADED models."""
        return ModelCardList(
            data=[
                ModelCard(id=r.model_id)
                for r in self.server.replicas()
                if r.status is ReplicaStatus.LOADED
            ]
        )
