"""The fleet of model servers: their join sessions, what they report, and when they are dead.

A model server is known only through its long-poll joins (DESIGN section 5). Each join carries
its capabilities and the status of every model it holds; the admin answers with the desired
assignment (`Fleet.join`, top to bottom below):

1. The caller is the leader and the cell's admin ACL admits it (checked by `sax.admin.cell`).
2. A draining server leaves at once: its session ends, so watchers stop routing to it and its
   replicas are re-placed before its port closes; its last reply assigns nothing.
3. A live session is continued only by the principal that opened it and with the same data
   address (`_check_same_server`), so one server cannot take over another's session. A join
   that its server has superseded (`superseded`: a lower number of the same incarnation, sent
   before the server gave it up for a fresher report) is refused, so it cannot undo that report.
4. The reports are recorded (`_note_reports`): load failures and successes of models assigned
   to that server with the published uuid, and which servers hold what.
5. Placement is asked for when what the server holds or can hold changed (`JoinChange`); a new
   server, or one with new capabilities, waits for it, so its reply already carries its share.
6. The join is answered at once when the server needs news (`ServerSession.should_reply_now`),
   else held up to the poll timeout or until its assignment changes (`_hold`). A newer join
   of the same server releases an older held one.

Liveness, without any admin->server calls (`ServerSession.dead`, run by the cell's reaper):
- while a join is held, the server is alive (its connection is open);
- a held join whose connection closes (crash, restart) makes the server dead after the
  disconnect grace unless it joins again, since a healthy server re-polls at once;
- with no join in flight, the server is dead the server TTL after its last join arrived
  (a silent partition: the held join was answered, and no new one came).

Joins cannot lie (`ServerSession.honours`): a report that a model is LOADING or LOADED counts only
when it carries the published uuid and the model is assigned to that server, or it came with the
first join of a session while the admin is recovering (`adoptable`: a restarted admin adopts the
replicas servers already hold, instead of moving them). The uuid is only ever sent to the server
a model is assigned to. Failed loads are remembered per (model, server) with exponential backoff;
a re-joining server's models that are not published are left out of its assignment, which tells
it to unload them, and a restarted server that re-joins empty is sent its assignment again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from sax.admin.metrics import AdminMetrics
from sax.admin.placement import Failure
from sax.admin.published import AssignmentKey, PublishedModels
from sax.errors import Code, SaxError, invalid
from sax.schemas import Assignment, JoinRequest, JoinResponse, ModelReport, ReplicaStatus

log = logging.getLogger(__name__)

Fingerprint = tuple[AssignmentKey, ...]
Disconnected = Callable[[], Awaitable[object]]


def held_models(request: JoinRequest) -> frozenset[tuple[str, str]]:
    """(model id, uuid) of every model the server reports that it is not unloading."""
    return frozenset(
        (m.model_id, m.uuid) for m in request.models if m.status != ReplicaStatus.UNLOADING
    )


def superseded(last: JoinRequest, request: JoinRequest) -> bool:
    """Whether `request` is a join its server already replaced by `last` (same incarnation,
    a number not above last's): a join the server gave up on, arriving late."""
    return (
        bool(request.incarnation)
        and request.incarnation == last.incarnation
        and request.seq <= last.seq
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

    def status(self, model_id: str, published_uuid: str | None) -> ReplicaStatus | None:
        """The reported status of `model_id` here if the server may serve it (`honours`); any
        other report counts as not loaded, except that FAILED/UNLOADING still keep placement
        off this server (they say nothing about other servers). None when not published."""
        report = self.reports.get(model_id)
        if report is None or published_uuid is None:
            return None
        if report.status in (ReplicaStatus.FAILED, ReplicaStatus.UNLOADING):
            return report.status
        return report.status if self.honours(model_id, published_uuid) else None

    def dead(self, now: float, ttl_s: float, grace_s: float) -> bool:
        """No join in flight and either the last one's connection closed `grace_s` ago, or
        none arrived for `ttl_s` (and none was answered in the last `grace_s`, so a poll
        timeout longer than the TTL cannot kill a healthy server between two polls)."""
        if self.inflight > 0:
            return False
        if self.disconnected_at is not None and now - self.disconnected_at >= grace_s:
            return True
        return now - self.last_join_at >= ttl_s and now - self.released_at >= grace_s


@dataclass(frozen=True)
class JoinChange:
    """What a join changed, for placement: `replan` asks for a new placement, which the join
    waits for when `wait`; the ready sets of the `touched` models are recomputed."""

    replan: bool
    wait: bool = False
    touched: frozenset[str] = frozenset()


Settle = Callable[[JoinChange], Awaitable[None]]


class Fleet:
    """Live server sessions by address, with the load-failure history placement reads."""

    def __init__(
        self,
        admin_id: str,
        published: PublishedModels,
        metrics: AdminMetrics,
        *,
        join_poll_timeout_s: float,
        server_ttl_s: float,
        disconnect_grace_s: float,
        failure_backoff_s: float,
        max_failure_backoff_s: float,
        adopt_window_s: float,
    ) -> None:
        self.admin_id = admin_id
        self.join_poll_timeout_s = join_poll_timeout_s
        self.server_ttl_s = server_ttl_s
        self.disconnect_grace_s = disconnect_grace_s
        self.failure_backoff_s = failure_backoff_s
        self.max_failure_backoff_s = max_failure_backoff_s
        self.adopt_window_s = adopt_window_s
        self.failures: dict[tuple[str, str], Failure] = {}  # (model id, address) -> history
        self.holders: dict[str, set[str]] = defaultdict(set)  # model id -> servers reporting it
        self._published = published
        self._metrics = metrics
        self._sessions: dict[str, ServerSession] = {}
        self._adopt_until = time.monotonic() + adopt_window_s

    def __contains__(self, address: object) -> bool:
        return address in self._sessions

    def __iter__(self) -> Iterator[ServerSession]:
        return iter(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, address: str) -> ServerSession | None:
        return self._sessions.get(address)

    def start_adopting(self) -> None:
        """From now, for the adopt window, first joins may bring the replicas they hold."""
        self._adopt_until = time.monotonic() + self.adopt_window_s

    def status(self, session: ServerSession, model_id: str) -> ReplicaStatus | None:
        """`ServerSession.status` against the published uuid of `model_id`."""
        model = self._published.get(model_id)
        return session.status(model_id, model.uuid if model else None)

    # ------------------------------------------------------------ the join

    async def join(
        self,
        request: JoinRequest,
        principal: str | None,
        disconnected: Disconnected | None,
        settle: Settle,
    ) -> JoinResponse:
        """Records a server's report and answers with its desired assignment (steps 2-6 of the
        module docstring). `settle` asks placement for what the join changed; `disconnected`,
        if given, returns when the caller's connection closes, and a held join that sees it
        marks the server for removal unless it joins again within the disconnect grace."""
        started = time.perf_counter()
        if not request.address:
            raise invalid("address must not be empty")
        now = time.monotonic()
        session = self._sessions.get(request.address)
        fresh = session is None
        if session is not None:
            _check_same_server(session, request, principal)
            if superseded(session.request, request):
                # Its report is older than the one recorded: it must not undo it.
                raise SaxError(
                    Code.CANCELLED,
                    f"join {request.seq} of {request.address} came after its join"
                    f" {session.request.seq}; the server gave it up",
                )
        if request.draining:
            return await self._leave(session, settle)
        if session is None:
            session = ServerSession(request=request, first_join_at=now, last_join_at=now)
            session.principal = principal
            if now < self._adopt_until:
                session.adoptable = frozenset(
                    m.model_id
                    for m in request.models
                    if m.status in (ReplicaStatus.LOADING, ReplicaStatus.LOADED)
                )
            self._sessions[request.address] = session
            log.info("server %s joined (%s %s)", request.address, request.chip, request.topology)
            old: dict[str, ModelReport] = {}
            replan = True
        else:
            old = session.reports
            replan = capabilities(session.request) != capabilities(request)
        new = {m.model_id: m for m in request.models}
        touched = self._note_reports(session, old, new, now)
        replan = replan or any(
            (mid in old) != (mid in new)
            or new[mid].status in (ReplicaStatus.FAILED, ReplicaStatus.UNLOADING)
            or old[mid].status in (ReplicaStatus.FAILED, ReplicaStatus.UNLOADING)
            for mid in touched
        )
        wait = replan and (fresh or capabilities(session.request) != capabilities(request))
        session.request = request
        session.reports = new
        session.last_join_at = now
        session.disconnected_at = None
        session.join_seq += 1
        seq = session.join_seq
        session.notify()  # an older join of this server still held answers now
        await settle(JoinChange(replan, wait, frozenset(touched)))
        self._metrics.join_latency.observe(time.perf_counter() - started)
        if session.should_reply_now(self.admin_id):
            return self._reply(session)
        return await self._hold(session, seq, disconnected)

    async def _leave(self, session: ServerSession | None, settle: Settle) -> JoinResponse:
        if session is not None:
            self.remove(session, "leaving")
            await settle(JoinChange(replan=True))
            session.notify()
        return JoinResponse(admin_id=self.admin_id, assignment=[])

    async def _hold(
        self, session: ServerSession, seq: int, disconnected: Disconnected | None
    ) -> JoinResponse:
        closed = False

        async def watch_close() -> None:
            nonlocal closed
            assert disconnected is not None
            await disconnected()
            closed = True
            session.notify()

        watcher = asyncio.create_task(watch_close()) if disconnected is not None else None
        session.inflight += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.join_poll_timeout_s
        try:
            while True:
                current = self._sessions.get(session.address) is session
                current = current and session.join_seq == seq
                if closed:
                    if current:
                        session.disconnected_at = time.monotonic()
                    raise SaxError(Code.CANCELLED, "the server closed its join")
                if not current or session.desired_fp != session.sent_fp:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wake = session.wake
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
        finally:
            session.inflight -= 1
            session.released_at = time.monotonic()
            if watcher is not None:
                watcher.cancel()
        return self._reply(session)

    def _reply(self, session: ServerSession) -> JoinResponse:
        session.mark_sent()
        return JoinResponse(admin_id=self.admin_id, assignment=list(session.desired))

    def _note_reports(
        self,
        session: ServerSession,
        old: dict[str, ModelReport],
        new: dict[str, ModelReport],
        now: float,
    ) -> set[str]:
        """Models whose reported status or uuid changed; records load failures and successes of
        models assigned to that server with the published uuid."""
        address = session.address
        touched = set()
        for mid in old.keys() | new.keys():
            o, n = old.get(mid), new.get(mid)
            if o is not None and n is not None and (o.status, o.uuid) == (n.status, n.uuid):
                continue
            touched.add(mid)
            if n is None:
                self.holders[mid].discard(address)
                continue
            self.holders[mid].add(address)
            model = self._published.get(mid)
            if model is None or n.uuid != model.uuid:
                continue
            if mid not in session.desired_ids and mid not in session.adoptable:
                continue
            if n.status == ReplicaStatus.FAILED:
                self._record_failure(mid, address, n.failure_reason, now)
            elif n.status == ReplicaStatus.LOADED:
                self.failures.pop((mid, address), None)
        return touched

    def _record_failure(self, mid: str, address: str, reason: str, now: float) -> None:
        prev = self.failures.get((mid, address))
        count = prev.count + 1 if prev else 1
        backoff = min(self.failure_backoff_s * 2 ** (count - 1), self.max_failure_backoff_s)
        self.failures[(mid, address)] = Failure(count, now + backoff, reason)
        log.warning(
            "%s failed to load on %s (%d times): %s; retry there in %.1f s",
            mid,
            address,
            count,
            reason,
            backoff,
        )

    # ------------------------------------------------------------ liveness

    def reap(self, now: float) -> bool:
        """Removes the servers that are dead at `now`; True if there were any."""
        dead = [
            s
            for s in self._sessions.values()
            if s.dead(now, self.server_ttl_s, self.disconnect_grace_s)
        ]
        for session in dead:
            self.remove(
                session, "disconnected" if session.disconnected_at is not None else "silent"
            )
        return bool(dead)

    def remove(self, session: ServerSession, why: str) -> None:
        """Ends a server's session (`why`: leaving, disconnected, silent); the caller re-places."""
        address = session.address
        del self._sessions[address]
        for mid in session.reports:
            self.holders[mid].discard(address)
        for key in [k for k in self.failures if k[1] == address]:
            del self.failures[key]
        self._metrics.dead_servers.labels(why).inc()
        if why == "leaving":
            log.info("server %s is leaving; re-placing its replicas", address)
        else:
            log.warning("server %s is dead (%s); re-placing its replicas", address, why)

    def forget_model(self, model_id: str) -> None:
        """An unpublished model's failure history goes with it."""
        for key in [k for k in self.failures if k[0] == model_id]:
            del self.failures[key]


def _check_same_server(session: ServerSession, request: JoinRequest, principal: str | None) -> None:
    """Refuses a join that would take over another server's live session."""
    if session.principal != principal:
        raise SaxError(
            Code.PERMISSION_DENIED,
            f"server {session.address} is joined as {session.principal or 'anonymous'}; "
            f"{principal or 'an anonymous caller'} may not take over its session",
        )
    data_address = request.data_address or request.address
    if data_address != session.data_address:
        raise SaxError(
            Code.FAILED_PRECONDITION,
            f"server {session.address} is live with data address {session.data_address}; "
            f"a join with {data_address} is refused until that session ends",
        )
