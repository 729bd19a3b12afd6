"""The cell's published models (Saxml's state): publish, update and unpublish, durable first.

A mutation hands the whole new `CellState` to `persist` and changes memory only once that
returns, so a failed write changes nothing and an acknowledged one survives a restart.
Mutations are serialized, and refused with UNAVAILABLE when this admin is not the leader
(checked before the ACL, and again under the lock). Unpublish frees the name at once.

Each `Publication` carries what follows from the model: the assignment entry servers are sent
(with its comparable key, cached for placement at 1,000 servers), and the WatchLoc log and
WaitForReady counter of its ready replicas, which live and die with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from sax.admin.validate import validate_model
from sax.admin.watch import Waitable, Watchable
from sax.auth.acl import OPEN, Access
from sax.errors import Code, SaxError, invalid, not_found
from sax.naming import NAME_PATTERN, CellId, ModelId, is_valid_name
from sax.schemas import Assignment, CellState, PublishedModel, PublishRequest, UpdateRequest

log = logging.getLogger(__name__)

Persist = Callable[[CellState], Awaitable[None]]
AssignmentKey = tuple[str, str, str, str, str]

# Fields whose change makes every server holding the model load it again.
RELOAD_FIELDS = ("checkpoint_path", "overrides")


def assignment_key(a: Assignment) -> AssignmentKey:
    """Everything a server acts on in one assignment entry, as a comparable value."""
    return (
        a.model_id,
        a.uuid,
        a.checkpoint_path,
        json.dumps(a.overrides, sort_keys=True, default=str),
        json.dumps(a.acls, sort_keys=True),
    )


@dataclass
class Publication:
    """One published model, and the assignment and ready sets that follow from it."""

    model: PublishedModel
    assignment: Assignment = field(init=False)
    key: AssignmentKey = field(init=False)
    locations: Watchable = field(default_factory=Watchable)  # ready data addresses (WatchLoc)
    ready: Waitable = field(default_factory=Waitable)  # ready replica count (WaitForReady)
    published_at: float | None = None  # perf_counter at publish, until a placement assigns it

    def __post_init__(self) -> None:
        self.set(self.model)

    def set(self, model: PublishedModel) -> None:
        self.model = model
        self.assignment = Assignment(
            model_id=model.model_id,
            model_path=model.model_path,
            checkpoint_path=model.checkpoint_path,
            overrides=model.overrides,
            acls=model.acls,
            uuid=model.uuid,
        )
        self.key = assignment_key(self.assignment)


@dataclass(frozen=True)
class Updated:
    """What `PublishedModels.update` did: `reloads` names the `RELOAD_FIELDS` that changed."""

    model_id: str
    changed: bool
    reloads: list[str]


class PublishedModels:
    """Model id -> `Publication`, in publish order. `check_leader` raises UNAVAILABLE when this
    admin does not lead the cell."""

    def __init__(self, cell: CellId, persist: Persist, check_leader: Callable[[], None]) -> None:
        self.cell = cell
        self._persist = persist
        self._check_leader = check_leader
        self._lock = asyncio.Lock()
        self._entries: dict[str, Publication] = {}

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def __iter__(self) -> Iterator[Publication]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, model_id: str) -> Publication | None:
        return self._entries.get(model_id)

    def get(self, model_id: str) -> PublishedModel | None:
        entry = self._entries.get(model_id)
        return entry.model if entry else None

    def require(self, model_id: str) -> Publication:
        """NOT_FOUND unless `model_id` is published."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise not_found(f"model {model_id} is not published")
        return entry

    def key(self, name: str) -> str:
        """The model id `name` means in this cell: a full id, or a short name."""
        if name.startswith("/"):
            return str(ModelId.parse_in_cell(name, self.cell))
        if not is_valid_name(name):
            raise invalid(f"model name {name!r} must match {NAME_PATTERN!r}")
        return str(ModelId(self.cell.cell, name))

    def state(self) -> CellState:
        """What state.json holds: every published model, by id."""
        return _state({mid: e.model for mid, e in self._entries.items()})

    def restore(self, state: CellState) -> None:
        """Loads state.json (before the cell starts); an invalid model is logged and skipped."""
        for model in state.models:
            try:
                validate_model(model, self.cell)
            except SaxError as exc:
                log.warning("state.json: skipping %s: %s", model.model_id, exc.message)
                continue
            if not model.uuid:
                model = model.model_copy(update={"uuid": uuid.uuid4().hex})
            self._entries[model.model_id] = Publication(model)

    async def publish(self, request: PublishRequest, access: Access = OPEN) -> str:
        """The new model's id. Needs the cell's admin ACL, checked before anything else;
        ALREADY_EXISTS if the id is published."""
        self._check_leader()
        access.require_cell_admin("publish", str(self.cell))
        model = PublishedModel(**request.model_dump(), uuid=uuid.uuid4().hex)
        mid = str(validate_model(model, self.cell))
        async with self._lock:
            self._check_leader()
            if mid in self._entries:
                raise SaxError(Code.ALREADY_EXISTS, f"model {mid} already exists")
            await self._persist(self._with(mid, model))
            self._entries[mid] = Publication(model, published_at=time.perf_counter())
        log.info("published %s (%s, %d replicas)", mid, model.model_path, model.num_replicas)
        return mid

    async def update(self, name: str, request: UpdateRequest, access: Access = OPEN) -> Updated:
        """Needs the cell's or the model's admin ACL; model_path is immutable (INVALID_ARGUMENT)."""
        self._check_leader()
        mid = self.key(name)
        access.authenticate(f"update {mid}")
        async with self._lock:
            self._check_leader()
            entry = self.require(mid)
            prev = entry.model
            access.require_model_admin("update", mid, prev.admin_acl)
            if request.model_path is not None and request.model_path != prev.model_path:
                raise invalid(
                    f"model_path is immutable: {mid} serves {prev.model_path!r}, not "
                    f"{request.model_path!r} (unpublish and publish again to change it)"
                )
            changes = request.model_dump(exclude_none=True, exclude={"model_path"})
            model = prev.model_copy(update=changes)
            validate_model(model, self.cell)
            if model == prev:
                return Updated(mid, changed=False, reloads=[])
            await self._persist(self._with(mid, model))
            entry.set(model)
        log.info("updated %s: %s", mid, sorted(changes))
        reloads = [f for f in RELOAD_FIELDS if getattr(model, f) != getattr(prev, f)]
        return Updated(mid, changed=True, reloads=reloads)

    async def unpublish(self, name: str, access: Access = OPEN) -> str:
        """The unpublished model's id. Needs the cell's or the model's admin ACL; its watchers
        and waiters are released at once."""
        self._check_leader()
        mid = self.key(name)
        access.authenticate(f"unpublish {mid}")
        async with self._lock:
            self._check_leader()
            access.require_model_admin("unpublish", mid, self.require(mid).model.admin_acl)
            rest = {k: e.model for k, e in self._entries.items() if k != mid}
            await self._persist(_state(rest))
            entry = self._entries.pop(mid)
            entry.locations.close()
            entry.ready.close()
        log.info("unpublished %s", mid)
        return mid

    def _with(self, mid: str, model: PublishedModel) -> CellState:
        return _state({**{k: e.model for k, e in self._entries.items()}, mid: model})


def _state(models: dict[str, PublishedModel]) -> CellState:
    return CellState(models=[models[mid] for mid in sorted(models)])
