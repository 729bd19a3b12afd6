"""Join sessions: what the admin knows about each model server, and when it is dead.

A model server is known only through its long-poll joins (DESIGN section 5). Each join
carries its capabilities and the status of every model it holds; the admin answers with the
desired assignment. This module holds the per-server record and the pure rules that decide
(a) whether a join is answered at once or held and (b) whether a server is dead.

Liveness, without any admin->server calls:
- while a join is held, the server is alive (its connection is open);
- a held join whose connection closes (crash, restart) makes the server dead after
  `grace_s` unless it joins again, since a healthy server re-polls at once;
- with no join in flight, the server is dead `ttl_s` after its last join arrived
  (a silent partition: the held join was answered, and no new one came).

Joins cannot lie (`ServerSession.honours`): a report that a model is LOADING or LOADED counts only
when it carries the published uuid and the model is assigned to that server, or it came with the
first join of a session while the admin is recovering (`adoptable`: a restarted admin adopts the
replicas servers already hold, instead of moving them). The uuid is only ever sent to the server
a model is assigned to. A session belongs to the principal that opened it, and its data address
cannot change while it lives, so one server cannot take over another's session.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from sax.schemas import Assignment, JoinRequest, ModelReport, ReplicaStatus

AssignmentKey = tuple[str, str, str, str, str]
Fingerprint = tuple[AssignmentKey, ...]


def assignment_key(a: Assignment) -> AssignmentKey:
    """Everything a server acts on in one assignment entry, as a comparable value."""
    return (
        a.model_id,
        a.uuid,
        a.checkpoint_path,
        json.dumps(a.overrides, sort_keys=True, default=str),
        json.dumps(a.acls, sort_keys=True),
    )


def held_models(request: JoinRequest) -> frozenset[tuple[str, str]]:
    """(model id, uuid) of every model the server reports that it is not unloading."""
    return frozenset(
        (m.model_id, m.uuid) for m in request.models if m.status != ReplicaStatus.UNLOADING
    )


def capabilities(request: JoinRequest) -> tuple[object, ...]:
    """The parts of a join that placement depends on, other than model statuses."""
    return (
        request.data_address or request.address,
        request.chip,
        request.topology,
        request.memory_bytes,
        tuple(sorted(request.servable_model_paths)),
        tuple(sorted(request.servable_memory_bytes.items())),
        tuple(sorted(request.tags)),
    )


@dataclass
class ServerSession:
    request: JoinRequest
    first_join_at: float
    last_join_at: float
    inflight: int = 0  # joins being held right now
    join_seq: int = 0  # bumped on every join; a held join that is no longer the latest returns
    released_at: float = 0.0  # when the last held join was answered
    disconnected_at: float | None = None
    reports: dict[str, ModelReport] = field(default_factory=dict)  # model id -> latest report
    principal: str | None = None  # who opened the session (None: auth off)
    adoptable: frozenset[str] = frozenset()  # model ids of the first join, until the first reply
    desired: tuple[Assignment, ...] = ()
    desired_ids: frozenset[str] = frozenset()
    desired_fp: Fingerprint = ()
    sent_fp: Fingerprint | None = None  # what the last reply carried (None: nothing sent yet)
    sent_held: frozenset[tuple[str, str]] | None = None  # what the server held at that reply
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return self.request.address

    @property
    def data_address(self) -> str:
        return self.request.data_address or self.request.address

    def set_desired(self, desired: tuple[Assignment, ...], fp: Fingerprint) -> bool:
        """`fp` is the tuple of `assignment_key` of `desired` (callers cache the keys)."""
        if fp == self.desired_fp:
            return False
        self.desired, self.desired_fp = desired, fp
        self.desired_ids = frozenset(a.model_id for a in desired)
        self.notify()
        return True

    def notify(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()

    def should_reply_now(self, admin_id: str) -> bool:
        """Answer at once when the server lacks news: a new session, another admin, an
        assignment it has not been sent, or a held set that disagrees with the assignment and
        changed since the last reply (so a server still converging is not answered in a loop)."""
        if self.sent_fp is None or self.request.admin_id != admin_id:
            return True
        if self.desired_fp != self.sent_fp:
            return True
        held = held_models(self.request)
        wanted = {(a.model_id, a.uuid) for a in self.desired}
        return held != wanted and held != self.sent_held

    def mark_sent(self) -> None:
        self.sent_fp = self.desired_fp
        self.sent_held = held_models(self.request)
        self.adoptable = frozenset()  # what the reply left out is not this server's to serve

    def honours(self, model_id: str, published_uuid: str) -> ModelReport | None:
        """The server's report of `model_id` if it may count as a replica (see the module
        docstring); None for a report of a model not assigned here or of another uuid."""
        report = self.reports.get(model_id)
        if report is None or not published_uuid or report.uuid != published_uuid:
            return None
        if model_id in self.desired_ids or model_id in self.adoptable:
            return report
        return None

    def dead(self, now: float, ttl_s: float, grace_s: float) -> bool:
        """No join in flight and either the last one's connection closed `grace_s` ago, or
        none arrived for `ttl_s` (and none was answered in the last `grace_s`, so a poll
        timeout longer than the TTL cannot kill a healthy server between two polls)."""
        if self.inflight > 0:
            return False
        if self.disconnected_at is not None and now - self.disconnected_at >= grace_s:
            return True
        return now - self.last_join_at >= ttl_s and now - self.released_at >= grace_s
