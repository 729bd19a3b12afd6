"""Every JSON body sax sends or receives: admin API, join protocol, data API, OpenAI subset.

One source of truth: the admin app, the model server app, the client and the tests import these
models, so the OpenAPI specs in ``openapi/`` and the wire agree by construction. Request models
forbid unknown fields (a typo is a 400 that names the field); response models are lenient so that
an older client can read a newer server. What an engine returns (`Sample`, `StreamItem` and their
log-probs) is defined once, engine-neutral, in `sax.generation` and used here as field types.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sax.generation import Sample, StreamItem

# Saxml method names; they are also the keys of a model's data-method ACLs.
METHODS: tuple[str, ...] = (
    "am.recognize",
    "lm.score",
    "lm.generate",
    "lm.generate_stream",
    "lm.embed",
    "lm.gradient",
    "mm.generate",
    "vm.classify",
    "vm.generate",
    "vm.embed",
    "vm.detect",
    "vm.image_to_text",
    "vm.image_to_image",
    "vm.text_and_image_to_text",
    "vm.video_to_text",
)

MAX_BODY_BYTES = 1 << 20  # admin requests; data requests have their own, larger limit


class Request(BaseModel):
    # Unknown fields are a 400 naming them; floats must be finite (NaN, Infinity and 1e400 are
    # refused by the field's name, wherever they appear).
    # defer_build: validators are built on first use, so importing the module (every saxutil
    # command, every client) does not pay for all of them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, defer_build=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class ReplicaStatus(enum.StrEnum):
    LOADING = "LOADING"
    LOADED = "LOADED"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


# ---------------------------------------------------------------- cell files (sax/store.py)


class Principal(Response):
    """A caller the cell knows (``config.json``): its bearer tokens, stored as SHA-256 hex
    digests only, and the ACL groups it belongs to."""

    token_sha256: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class CellConfig(Response):
    """``<sax_root>/sax/<cell>/config.json``. Auth is on when `principals` names anyone."""

    version: int = 1
    fs_root: str
    admin_acl: str = ""
    principals: dict[str, Principal] = Field(default_factory=dict)


class Location(Response):
    """``<sax_root>/sax/<cell>/location.json``: where the leader admin listens, and its lease."""

    version: int = 1
    address: str = ""  # host:port of the leader's HTTP API; "" until an admin has run
    admin_id: str = ""
    lease_expires_at: float = 0.0  # unix seconds


class PublishedModel(Response):
    """A published model as the admin stores it (``state.json``) and hands it to servers."""

    model_id: str
    model_path: str
    checkpoint_path: str
    num_replicas: int
    overrides: dict[str, Any] = Field(default_factory=dict)
    acls: dict[str, str] = Field(default_factory=dict)
    admin_acl: str = ""
    uuid: str = ""


class CellState(Response):
    """``<fs_root>/sax/<cell>/state.json``."""

    version: int = 1
    models: list[PublishedModel] = Field(default_factory=list)


# ---------------------------------------------------------------- admin API


class PublishRequest(Request):
    model_id: str = Field(description="/sax/<cell>/<name>")
    model_path: str = Field(description="registered servable, e.g. sax.models.vllm.Tiny")
    checkpoint_path: str = Field(
        "None", description="local path or gs:// URL; None = random weights"
    )
    num_replicas: int = Field(1, description="requested replicas, >= 0")
    overrides: dict[str, Any] = Field(default_factory=dict)
    acls: dict[str, str] = Field(default_factory=dict, description="data method -> ACL name")
    admin_acl: str = ""


class UpdateRequest(Request):
    """PATCH body: only the fields given change. model_path is immutable (400 if it differs)."""

    model_path: str | None = None
    checkpoint_path: str | None = None
    num_replicas: int | None = None
    overrides: dict[str, Any] | None = None
    acls: dict[str, str] | None = None
    admin_acl: str | None = None


class ReplicaInfo(Response):
    address: str = Field(description="data address clients call")
    server: str = Field(description="the server's join address")
    status: ReplicaStatus | None = Field(None, description="None until the server reports it")
    failure_reason: str = ""


class ModelInfo(Response):
    model_id: str
    model_path: str
    checkpoint_path: str
    num_replicas: int = Field(description="requested replicas")
    ready_replicas: int = 0
    replicas: list[ReplicaInfo] = Field(default_factory=list)
    overrides: dict[str, Any] = Field(default_factory=dict)
    acls: dict[str, str] = Field(default_factory=dict)
    admin_acl: str = ""
    methods: list[str] = Field(default_factory=list)
    reason: str = Field("", description="why fewer replicas than requested are placed or ready")


class ModelList(Response):
    models: list[ModelInfo] = Field(default_factory=list)


class Mutation(Response):
    op: Literal["add", "del"]
    address: str


class WatchResult(Response):
    """WatchLoc reply: replace the set with `values` when `has_fullset`, then apply `changelog`."""

    admin_id: str
    next_seqno: int
    has_fullset: bool = False
    values: list[str] = Field(default_factory=list)
    changelog: list[Mutation] = Field(default_factory=list)


class WaitRequest(Request):
    num_replicas: int = Field(1, ge=0)
    timeout_s: float = Field(30.0, gt=0, le=600)


class WaitResponse(Response):
    ready_replicas: int


class ServerTypeStat(Response):
    chip: str
    topology: str
    num_servers: int


class CellStats(Response):
    server_types: list[ServerTypeStat] = Field(default_factory=list)
    servers_by_model_path: dict[str, int] = Field(default_factory=dict)
    num_servers: int = 0
    num_models: int = 0


class MethodStats(Response):
    pending: int = 0
    successes_per_second: float = 0.0
    errors_per_second: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_p99_s: float = 0.0


class ModelReport(Response):
    """One model as a server reports it in each join."""

    model_id: str
    model_path: str
    checkpoint_path: str = "None"
    uuid: str = ""
    status: ReplicaStatus
    failure_reason: str = ""
    method_stats: dict[str, MethodStats] = Field(default_factory=dict)


class ServerInfo(Response):
    address: str
    data_address: str
    chip: str
    topology: str
    memory_bytes: int
    model_paths: list[str]
    tags: list[str]
    models: list[ModelReport]
    seconds_since_last_join: float
    backend_errors: dict[str, str] = Field(default_factory=dict)
    draining: bool = False


class Probe(Response):
    """A liveness or readiness answer (`/livez`, `/readyz`): 200 when every check is "ok",
    503 otherwise."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(
        default_factory=dict, description='check name -> "ok" or what is wrong'
    )


class ServerList(Response):
    servers: list[ServerInfo] = Field(default_factory=list)


# ---------------------------------------------------------------- join protocol


class JoinRequest(Request):
    address: str = Field(description="the server's own address (its identity in the cell)")
    data_address: str = Field("", description="address clients call; defaults to address")
    chip: str = "cpu"
    topology: str = "1"
    memory_bytes: int = Field(0, ge=0, description="memory for models; 0 = unlimited")
    servable_model_paths: list[str] = Field(default_factory=list)
    servable_memory_bytes: dict[str, int] = Field(
        default_factory=dict, description="model path -> estimated bytes per replica"
    )
    tags: list[str] = Field(default_factory=list)
    models: list[ModelReport] = Field(default_factory=list)
    admin_id: str = Field("", description="admin_id from the last reply; '' on first join")
    backend_errors: dict[str, str] = Field(
        default_factory=dict,
        description="backend -> why it is unavailable (its model paths are not offered)",
    )
    draining: bool = Field(
        default=False,
        description="the server is leaving: stop routing to it and place nothing there; the"
        " reply is the last one it waits for",
    )
    incarnation: str = Field(
        default="",
        description="this server process's id, new at each start; with seq it orders the"
        " server's joins ('' leaves them unordered)",
    )
    seq: int = Field(
        default=0,
        ge=0,
        description="the join's number within its incarnation, rising; the admin refuses"
        " (CANCELLED) a join that is not newer than one it has recorded",
    )


class Assignment(Response):
    model_id: str
    model_path: str
    checkpoint_path: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    acls: dict[str, str] = Field(default_factory=dict)
    uuid: str = ""


class JoinResponse(Response):
    admin_id: str
    assignment: list[Assignment] = Field(default_factory=list)


# ---------------------------------------------------------------- data API (model server)


ExtraValue = float | int | str | list[str] | list[int] | bool


class GenerateRequest(Request):
    text: str
    extra_inputs: dict[str, ExtraValue] = Field(
        default_factory=dict,
        description="temperature, per_example_max_decode_steps, per_example_top_k, "
        "per_example_top_p, num_samples, seed, stop",
    )
    timeout_s: float | None = Field(None, gt=0, description="per-request deadline -> 504")


class GenerateResponse(Response):
    samples: list[Sample]


class StreamChunk(Response):
    items: list[StreamItem]


class StreamDone(Response):
    samples: list[Sample]


class ScoreRequest(Request):
    prefix: str
    suffixes: list[str] = Field(min_length=1)
    extra_inputs: dict[str, ExtraValue] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class ScoreResponse(Response):
    scores: list[float] = Field(description="log P(suffix | prefix), one per suffix")


class EmbedRequest(Request):
    text: str
    extra_inputs: dict[str, ExtraValue] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class EmbedResponse(Response):
    embedding: list[float]


class GradientRequest(Request):
    prefix: str
    suffix: str
    extra_inputs: dict[str, ExtraValue] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class Tensor(Response):
    shape: list[int]
    values: list[float] = Field(description="row-major, flattened")


class GradientResponse(Response):
    score: list[float]
    gradients: dict[str, Tensor]


# Vision (vm.*): images travel as base64 text (standard alphabet; a ``data:image/...;base64,``
# URL is accepted too). Bad images are a 400 naming the field (sax/server/images.py).

VisionExtra = dict[str, float | int | str | bool]


class ClassifyRequest(Request):
    image_bytes: str = Field(description="the image, base64 (PNG, JPEG, ...)")
    extra_inputs: VisionExtra = Field(default_factory=dict, description="top_k")
    timeout_s: float | None = Field(None, gt=0)


class ScoredText(Response):
    text: str
    score: float


class ClassifyResponse(Response):
    texts: list[ScoredText] = Field(description="top-k labels, best first; score = probability")


class ImageEmbedRequest(Request):
    image_bytes: str = Field(description="the image, base64")
    extra_inputs: VisionExtra = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class TextToImageRequest(Request):
    text: str = Field(min_length=1, description="the prompt")
    extra_inputs: VisionExtra = Field(
        default_factory=dict, description="num_samples (images), seed"
    )
    timeout_s: float | None = Field(None, gt=0)


class GeneratedImage(Response):
    image: str = Field(description="PNG, base64")
    score: float


class TextToImageResponse(Response):
    images: list[GeneratedImage]


class DetectRequest(Request):
    image_bytes: str = Field(description="the image, base64")
    text: list[str] = Field(
        default_factory=list, description="open-set concepts (only models that take text)"
    )
    extra_inputs: VisionExtra = Field(default_factory=dict, description="score_threshold")
    timeout_s: float | None = Field(None, gt=0)


class BoundingBox(Response):
    """A box in pixels of the input image: centre (cx, cy), width and height; origin top-left."""

    cx: float
    cy: float
    w: float
    h: float
    text: str = Field(description="the label")
    score: float


class DetectResponse(Response):
    bounding_boxes: list[BoundingBox] = Field(description="best first")


class ServerStatus(Response):
    """GET /v1/status on a model server."""

    address: str
    admin_address: str = ""
    admin_id: str = ""
    models: list[ModelReport] = Field(default_factory=list)
    engine_pids: dict[str, list[int]] = Field(
        default_factory=dict, description="model id -> process ids of its engine processes"
    )
    backend_errors: dict[str, str] = Field(
        default_factory=dict, description="backend -> why it is unavailable"
    )
    draining: bool = False


class ErrorDetail(Response):
    code: str
    message: str
    param: str | None = Field(None, description="the request field at fault, when one is")


class ErrorBody(Response):
    error: ErrorDetail
