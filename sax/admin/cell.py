"""The admin's control plane for one cell: published models, joined servers, placement.

`Cell` is a plain object: the HTTP app (`sax.admin_app`) and the tests drive it directly.
What it guarantees:

- Mutations (publish, update, unpublish) are durable before they return: the new state is
  handed to `persist` first and applied in memory only once that returns, so a failed write
  changes nothing. They are serialized, and refused with UNAVAILABLE when this admin is not
  the leader.
- Placement (`sax.admin.placement.place`, a pure function) is recomputed on events only:
  publish, update, unpublish, a join that changes what a server holds or can hold, a death,
  and the end of a load-failure backoff. Requests for it are coalesced into one background
  run. No periodic tick decides placement; a short timer only checks liveness and backoffs.
- Servers are known through their long-poll joins (`sax.admin.joins`); a dead one's replicas
  are re-placed at once and watchers are told.
- Ready replicas (LOADED with the published uuid, on a server still assigned the model) feed
  WatchLoc and WaitForReady; both are recomputed from reports, never counted up and down.

Deliberate fixes of the original's quirks: a restarted server that re-joins empty is sent its
assignment again (d); failed loads are retried with exponential backoff, on another server
when one can take it (e); a re-joining server's models that are not published are left out of
its assignment, which tells it to unload them (k); any capability change re-places (l);
unpublish unloads at once, so the name can be republished immediately.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

from sax.admin.joins import AssignmentKey, ServerSession, assignment_key, capabilities
from sax.admin.metrics import AdminMetrics, Snapshot
from sax.admin.placement import Failure, Placement, ServerView, place
from sax.admin.validate import validate_model
from sax.admin.watch import Signal, Waitable, Watchable
from sax.auth.acl import OPEN, Access
from sax.errors import Code, SaxError, invalid, not_found, unavailable
from sax.naming import NAME_PATTERN, CellId, ModelId, is_valid_name
from sax.schemas import (
    Assignment,
    CellState,
    CellStats,
    JoinRequest,
    JoinResponse,
    ModelInfo,
    ModelList,
    ModelReport,
    Probe,
    PublishedModel,
    PublishRequest,
    ReplicaInfo,
    ReplicaStatus,
    ServerInfo,
    ServerList,
    ServerTypeStat,
    UpdateRequest,
    WaitResponse,
    WatchResult,
)

log = logging.getLogger(__name__)

Persist = Callable[[CellState], Awaitable[None]]
Disconnected = Callable[[], Awaitable[object]]


class Cell:
    def __init__(
        self,
        cell: CellId,
        admin_id: str,
        persist: Persist,
        *,
        join_poll_timeout_s: float = 5.0,
        server_ttl_s: float = 10.0,
        watch_timeout_s: float = 30.0,
        disconnect_grace_s: float = 0.5,
        failure_backoff_s: float = 1.0,
        max_failure_backoff_s: float = 60.0,
        adopt_window_s: float = 10.0,
    ) -> None:
        self.cell = cell
        self.admin_id = admin_id
        self.join_poll_timeout_s = join_poll_timeout_s
        self.server_ttl_s = server_ttl_s
        self.watch_timeout_s = watch_timeout_s
        self.disconnect_grace_s = disconnect_grace_s
        self.failure_backoff_s = failure_backoff_s
        self.max_failure_backoff_s = max_failure_backoff_s
        self.adopt_window_s = adopt_window_s
        self._adopt_until = time.monotonic() + adopt_window_s
        self.metrics = AdminMetrics()
        self.metrics.watch_gauges(self._snapshot)
        self._persist = persist
        self._is_leader: Callable[[], bool] = lambda: True
        self._mutations = asyncio.Lock()
        self._models: dict[str, PublishedModel] = {}
        self._assignments: dict[str, tuple[Assignment, AssignmentKey]] = {}
        self._watch: dict[str, Watchable] = {}
        self._ready: dict[str, Waitable] = {}
        self._servers: dict[str, ServerSession] = {}
        self._holders: dict[str, set[str]] = defaultdict(set)  # model -> servers reporting it
        self._failures: dict[tuple[str, str], Failure] = {}
        self._placement = Placement({}, {}, {})
        self._published_at: dict[str, float] = {}
        self._retry_at: float | None = None
        self._kick = asyncio.Event()
        self._requested = 0
        self._done = 0
        self._placed = Signal()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    def restore(self, state: CellState) -> None:
        """Loads published models from state.json (before `start`); servers re-join on their own."""
        for model in state.models:
            try:
                validate_model(model, self.cell)
            except SaxError as exc:
                log.warning("state.json: skipping %s: %s", model.model_id, exc.message)
                continue
            if not model.uuid:
                model = model.model_copy(update={"uuid": uuid.uuid4().hex})
            self._install(model)
        self._request_placement()

    def liveness(self) -> Probe:
        """The placer and reaper loops still run (they log and go on after an error)."""
        checks = {t.get_name(): "stopped" if t.done() else "ok" for t in self._tasks} or {
            "control_loops": "not started"
        }
        ok = all(v == "ok" for v in checks.values())
        return Probe(status="ok" if ok else "unavailable", checks=checks)

    def readiness(self) -> Probe:
        """Live, and this admin holds the cell's lease (a deposed leader is not ready)."""
        probe = self.liveness()
        leader = self._is_leader()
        checks = {**probe.checks, "lease": "ok" if leader else "not the leader"}
        ok = probe.status == "ok" and leader
        return Probe(status="ok" if ok else "unavailable", checks=checks)

    def set_leader_check(self, fn: Callable[[], bool]) -> None:
        self._is_leader = fn

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Starts the placement and liveness tasks; a no-op when they already run."""
        if not self._tasks:
            self._adopt_until = time.monotonic() + self.adopt_window_s
            self._tasks = [
                asyncio.create_task(self._placer(), name="sax-placer"),
                asyncio.create_task(self._reaper(), name="sax-reaper"),
            ]
            self._kick.set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------ admin API

    async def publish(self, request: PublishRequest, access: Access = OPEN) -> ModelInfo:
        """Needs the cell's admin ACL (`sax.auth.acl`), checked before anything else."""
        self._check_leader()
        access.require_cell_admin("publish", str(self.cell))
        model = PublishedModel(**request.model_dump(), uuid=uuid.uuid4().hex)
        mid = str(validate_model(model, self.cell))
        async with self._mutations:
            self._check_leader()
            if mid in self._models:
                raise SaxError(Code.ALREADY_EXISTS, f"model {mid} already exists")
            await self._persist(self._state({**self._models, mid: model}))
            self._install(model)
            self._published_at[mid] = time.perf_counter()
        log.info("published %s (%s, %d replicas)", mid, model.model_path, model.num_replicas)
        self._request_placement()
        return self._info(mid)

    async def update(self, name: str, request: UpdateRequest, access: Access = OPEN) -> ModelInfo:
        """Needs the cell's or the model's admin ACL."""
        self._check_leader()
        mid = self._model_key(name)
        access.authenticate(f"update {mid}")
        async with self._mutations:
            self._check_leader()
            prev = self._get(mid)
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
                return self._info(mid)
            await self._persist(self._state({**self._models, mid: model}))
            self._models[mid] = model
            self._assignments[mid] = _assignment(model)
        log.info("updated %s: %s", mid, sorted(changes))
        self._request_placement()
        reloads = [f for f in RELOAD_FIELDS if getattr(model, f) != getattr(prev, f)]
        return reloading(self._info(mid), reloads) if reloads else self._info(mid)

    async def unpublish(self, name: str, access: Access = OPEN) -> None:
        """Needs the cell's or the model's admin ACL."""
        self._check_leader()
        mid = self._model_key(name)
        access.authenticate(f"unpublish {mid}")
        async with self._mutations:
            self._check_leader()
            access.require_model_admin("unpublish", mid, self._get(mid).admin_acl)
            await self._persist(self._state({k: v for k, v in self._models.items() if k != mid}))
            del self._models[mid]
            del self._assignments[mid]
            self._watch.pop(mid).close()
            self._ready.pop(mid).close()
            self._published_at.pop(mid, None)
            for key in [k for k in self._failures if k[0] == mid]:
                del self._failures[key]
        log.info("unpublished %s", mid)
        self._request_placement()

    async def get(self, name: str) -> ModelInfo:
        mid = self._model_key(name)
        self._get(mid)
        return self._info(mid)

    async def list(self) -> ModelList:
        return ModelList(models=[self._info(mid) for mid in sorted(self._models)])

    async def watch(
        self, name: str, admin_id: str, seqno: int, timeout_s: float | None = None
    ) -> WatchResult:
        """WatchLoc: ready data addresses after `seqno`, waiting at most the watch timeout."""
        if seqno < 0:
            raise invalid(f"seqno {seqno} must be non-negative")
        watchable = self._watch.get(self._model_key(name))
        if watchable is None:
            raise not_found(f"model {name} is not published")
        limit = self.watch_timeout_s if timeout_s is None else min(timeout_s, self.watch_timeout_s)
        return await watchable.watch(self.admin_id, admin_id, seqno, max(limit, 0.0))

    async def wait(self, name: str, num_replicas: int, timeout_s: float) -> WaitResponse:
        """WaitForReady: returns once `num_replicas` replicas are ready."""
        mid = self._model_key(name)
        waitable = self._ready.get(mid)
        if waitable is None:
            raise not_found(f"model {mid} is not published")
        try:
            ready = await waitable.wait(num_replicas, timeout_s)
        except SaxError as exc:
            if exc.code == Code.DEADLINE_EXCEEDED:
                reason = self._info(mid).reason if mid in self._models else ""
                raise SaxError(
                    exc.code, f"{mid}: {exc.message}" + (f"; {reason}" if reason else "")
                ) from None
            raise
        return WaitResponse(ready_replicas=ready)

    async def stats(self, name: str | None = None) -> CellStats:
        servers = list(self._servers.values())
        if name:
            mid = self._model_key(name)
            self._get(mid)
            placed = set(self._placement.replicas.get(mid, ()))
            servers = [s for s in servers if s.address in placed]
        types: dict[tuple[str, str], int] = defaultdict(int)
        paths: dict[str, int] = defaultdict(int)
        for s in servers:
            types[(s.request.chip, s.request.topology)] += 1
            for path in set(s.request.servable_model_paths):
                paths[path] += 1
        return CellStats(
            server_types=[
                ServerTypeStat(chip=c, topology=t, num_servers=n)
                for (c, t), n in sorted(types.items())
            ],
            servers_by_model_path=dict(sorted(paths.items())),
            num_servers=len(servers),
            num_models=len(self._models),
        )

    async def servers(self) -> ServerList:
        now = time.monotonic()
        return ServerList(
            servers=[
                ServerInfo(
                    address=s.address,
                    data_address=s.data_address,
                    chip=s.request.chip,
                    topology=s.request.topology,
                    memory_bytes=s.request.memory_bytes,
                    model_paths=sorted(s.request.servable_model_paths),
                    tags=sorted(s.request.tags),
                    models=sorted(
                        (m.model_copy(update={"uuid": ""}) for m in s.request.models),
                        key=lambda m: m.model_id,
                    ),
                    seconds_since_last_join=max(0.0, now - s.last_join_at),
                    backend_errors=dict(s.request.backend_errors),
                )
                for _, s in sorted(self._servers.items())
            ]
        )

    async def placed(self, timeout_s: float = 5.0) -> None:
        """Returns once every event so far has been reflected in a placement, or after
        `timeout_s` (placement keeps failing: the caller goes on with the last one)."""
        target = self._requested
        deadline = time.monotonic() + timeout_s
        while self._done < target and self._tasks and time.monotonic() < deadline:
            await self._placed.wait(1.0)

    # ------------------------------------------------------------ join protocol

    async def join(
        self,
        request: JoinRequest,
        disconnected: Disconnected | None = None,
        access: Access = OPEN,
    ) -> JoinResponse:
        """Records a server's report and answers with its desired assignment.

        Answers at once when the server needs news (`ServerSession.should_reply_now`), else
        holds up to the join poll timeout or until its assignment changes. `disconnected`, if
        given, returns when the caller's connection closes; a held join that sees it marks
        the server for removal unless it joins again within the disconnect grace.

        Needs the cell's admin ACL. A live session is continued only by the principal that
        opened it and with the same data address (PERMISSION_DENIED / FAILED_PRECONDITION);
        reports of models not assigned to the server are ignored (`ServerSession.honours`)."""
        started = time.perf_counter()
        self._check_leader()
        access.require_cell_admin("join", str(self.cell))
        if not request.address:
            raise invalid("address must not be empty")
        now = time.monotonic()
        session = self._servers.get(request.address)
        fresh = session is None
        if request.draining:
            if session is not None:
                _check_same_server(session, request, access.principal)
            return self._leave(session)
        if session is not None:
            _check_same_server(session, request, access.principal)
        if session is None:
            session = ServerSession(request=request, first_join_at=now, last_join_at=now)
            session.principal = access.principal
            if now < self._adopt_until:
                session.adoptable = frozenset(
                    m.model_id
                    for m in request.models
                    if m.status in (ReplicaStatus.LOADING, ReplicaStatus.LOADED)
                )
            self._servers[request.address] = session
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
        wait_for_placement = replan and (
            fresh or capabilities(session.request) != capabilities(request)
        )
        session.request = request
        session.reports = new
        session.last_join_at = now
        session.disconnected_at = None
        session.join_seq += 1
        seq = session.join_seq
        session.notify()  # an older join of this server still held answers now
        if replan:
            self._request_placement()
            if wait_for_placement:
                await self.placed()
        self._refresh_ready(mid for mid in touched if mid in self._models)
        self.metrics.join_latency.observe(time.perf_counter() - started)
        if session.should_reply_now(self.admin_id):
            return self._reply(session)
        return await self._hold(session, seq, disconnected)

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
                current = self._servers.get(session.address) is session and session.join_seq == seq
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

    def _leave(self, session: ServerSession | None) -> JoinResponse:
        """A server is shutting down: drop its session now, so watchers stop routing to it and
        its replicas are re-placed before its port closes; its last reply assigns nothing."""
        if session is not None:
            self._remove_server(session, "leaving")
            session.notify()
        return JoinResponse(admin_id=self.admin_id, assignment=[])

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
                self._holders[mid].discard(address)
                continue
            self._holders[mid].add(address)
            model = self._models.get(mid)
            if model is None or n.uuid != model.uuid:
                continue
            if mid not in session.desired_ids and mid not in session.adoptable:
                continue
            if n.status == ReplicaStatus.FAILED:
                self._record_failure(mid, address, n.failure_reason, now)
            elif n.status == ReplicaStatus.LOADED:
                self._failures.pop((mid, address), None)
        return touched

    def _record_failure(self, mid: str, address: str, reason: str, now: float) -> None:
        prev = self._failures.get((mid, address))
        count = prev.count + 1 if prev else 1
        backoff = min(self.failure_backoff_s * 2 ** (count - 1), self.max_failure_backoff_s)
        self._failures[(mid, address)] = Failure(count, now + backoff, reason)
        log.warning(
            "%s failed to load on %s (%d times): %s; retry there in %.1f s",
            mid,
            address,
            count,
            reason,
            backoff,
        )

    # ------------------------------------------------------------ background

    def _request_placement(self) -> None:
        self._requested += 1
        if self._tasks:
            self._kick.set()
        else:
            self._place_now()
            self._done = self._requested

    async def _placer(self) -> None:
        """Places on every kick. A placement that raises is logged and retried with backoff;
        waiters in `placed` are released only by a placement that ran."""
        failures = 0
        while True:
            await self._kick.wait()
            self._kick.clear()
            target = self._requested
            try:
                self._place_now()
            except Exception:
                failures += 1
                log.exception("placement failed (%d in a row); retrying", failures)
                await asyncio.sleep(min(1.0, 0.05 * 2**failures))
                self._kick.set()
                continue
            failures = 0
            self._done = target
            self._placed.fire()

    async def _reaper(self) -> None:
        """Declares dead servers and ends backoffs; never decides placement itself."""
        tick = max(0.02, min(0.1, self.disconnect_grace_s / 4, self.server_ttl_s / 10))
        while True:
            await asyncio.sleep(tick)
            try:
                self._reap(time.monotonic())
            except Exception:
                log.exception("the liveness check failed; it runs again next tick")

    def _reap(self, now: float) -> None:
        for session in list(self._servers.values()):
            if session.dead(now, self.server_ttl_s, self.disconnect_grace_s):
                why = "disconnected" if session.disconnected_at is not None else "silent"
                self._remove_server(session, why)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._request_placement()

    def _remove_server(self, session: ServerSession, why: str) -> None:
        address = session.address
        del self._servers[address]
        for mid in session.reports:
            self._holders[mid].discard(address)
        for key in [k for k in self._failures if k[1] == address]:
            del self._failures[key]
        self.metrics.dead_servers.labels(why).inc()
        if why == "leaving":
            log.info("server %s is leaving; re-placing its replicas", address)
        else:
            log.warning("server %s is dead (%s); re-placing its replicas", address, why)
        self._request_placement()

    def _place_now(self) -> None:
        started = time.perf_counter()
        now = time.monotonic()
        placement = place(
            self._models.values(),
            [self._view(s) for s in self._servers.values()],
            self._failures,
            now,
        )
        for address, session in self._servers.items():
            mids = placement.assignment.get(address, ())
            entries = [self._assignments[mid] for mid in mids]
            session.set_desired(tuple(a for a, _ in entries), tuple(k for _, k in entries))
        self._placement = placement
        self._refresh_ready(self._models)
        done = time.perf_counter()
        for mid in [m for m in self._published_at if placement.replicas.get(m)]:
            self.metrics.publish_to_assignment.observe(done - self._published_at.pop(mid))
        pending = [f.retry_at for f in self._failures.values() if f.retry_at > now]
        self._retry_at = min(pending) if pending else None
        self.metrics.placement_latency.observe(done - started)

    def _view(self, session: ServerSession) -> ServerView:
        replicas: dict[str, ReplicaStatus | None] = {
            a.model_id: self._status(session, a.model_id) for a in session.desired
        }
        for mid in session.reports:
            if mid in self._models and mid not in replicas:
                replicas[mid] = self._status(session, mid)
        req = session.request
        return ServerView(
            address=req.address,
            chip=req.chip,
            topology=req.topology,
            memory_bytes=req.memory_bytes,
            model_paths=frozenset(req.servable_model_paths),
            model_memory=req.servable_memory_bytes,
            tags=frozenset(req.tags),
            replicas=replicas,
        )

    def _status(self, session: ServerSession, mid: str) -> ReplicaStatus | None:
        """The reported status of `mid` there, if the server may serve it (`honours`); any
        other report counts as not loaded, except that FAILED/UNLOADING still keep placement
        off that server (they say nothing about other servers)."""
        report = session.reports.get(mid)
        model = self._models.get(mid)
        if report is None or model is None:
            return None
        if report.status in (ReplicaStatus.FAILED, ReplicaStatus.UNLOADING):
            return report.status
        return report.status if session.honours(mid, model.uuid) else None

    def _refresh_ready(self, mids: Iterable[str]) -> None:
        for mid in mids:
            addrs = [
                self._servers[a].data_address
                for a in self._placement.replicas.get(mid, ())
                if a in self._servers
                and self._status(self._servers[a], mid) == ReplicaStatus.LOADED
            ]
            self._watch[mid].set_values(addrs)
            self._ready[mid].set(len(addrs))

    # ------------------------------------------------------------ helpers

    def _check_leader(self) -> None:
        if not self._is_leader():
            raise unavailable("not the leader")

    def _model_key(self, name: str) -> str:
        if name.startswith("/"):
            return str(ModelId.parse_in_cell(name, self.cell))
        if not is_valid_name(name):
            raise invalid(f"model name {name!r} must match {NAME_PATTERN!r}")
        return str(ModelId(self.cell.cell, name))

    def _get(self, mid: str) -> PublishedModel:
        model = self._models.get(mid)
        if model is None:
            raise not_found(f"model {mid} is not published")
        return model

    def _install(self, model: PublishedModel) -> None:
        self._models[model.model_id] = model
        self._assignments[model.model_id] = _assignment(model)
        self._watch[model.model_id] = Watchable()
        self._ready[model.model_id] = Waitable()

    def _state(self, models: dict[str, PublishedModel]) -> CellState:
        return CellState(models=[models[mid] for mid in sorted(models)])

    def _info(self, mid: str) -> ModelInfo:
        model = self._models[mid]
        placed = self._placement.replicas.get(mid, ())
        # A server unloads a failed model as soon as it is unassigned, so its report of the
        # failure lasts moments; while the pair waits out its backoff it still shows FAILED.
        now = time.monotonic()
        backoff = {a: f for (m, a), f in self._failures.items() if m == mid and f.retry_at > now}
        replicas = []
        for address in sorted(set(placed) | self._holders.get(mid, set()) | backoff.keys()):
            session = self._servers.get(address)
            if session is None:
                continue
            status = self._status(session, mid)
            report = session.reports.get(mid)
            if address not in placed and (report is None or report.uuid != model.uuid):
                report = None  # not a replica of this model: nothing of it is shown
                if status == ReplicaStatus.FAILED:
                    status = None
            reason = report.failure_reason if report and status == ReplicaStatus.FAILED else ""
            if address not in placed and status != ReplicaStatus.FAILED:
                if address not in backoff:
                    continue  # being unloaded there; not a replica
                status, reason = ReplicaStatus.FAILED, backoff[address].reason
            replicas.append(
                ReplicaInfo(
                    address=session.data_address,
                    server=address,
                    status=status,
                    failure_reason=reason,
                )
            )
        ready = sum(1 for r in replicas if r.status == ReplicaStatus.LOADED and r.server in placed)
        methods: set[str] = set()
        for address in self._holders.get(mid, ()):
            holder = self._servers.get(address)
            report = holder.honours(mid, model.uuid) if holder is not None else None
            if report is not None:
                methods.update(report.method_stats)
        return ModelInfo(
            model_id=mid,
            model_path=model.model_path,
            checkpoint_path=model.checkpoint_path,
            num_replicas=model.num_replicas,
            ready_replicas=ready,
            replicas=replicas,
            overrides=model.overrides,
            acls=model.acls,
            admin_acl=model.admin_acl,
            methods=sorted(methods),
            reason=self._reason(model, replicas, ready),
        )

    def _reason(
        self, model: PublishedModel, replicas: builtins.list[ReplicaInfo], ready: int
    ) -> str:
        if ready >= model.num_replicas:
            return ""
        parts = []
        placement_reason = self._placement.reasons.get(model.model_id)
        if placement_reason:
            parts.append(placement_reason)
        loading = [r.server for r in replicas if r.status in (None, ReplicaStatus.LOADING)]
        if loading:
            parts.append(f"loading on {', '.join(loading)}")
        failed = {r.server: r.failure_reason for r in replicas if r.status == ReplicaStatus.FAILED}
        now = time.monotonic()
        for (mid, address), f in sorted(self._failures.items()):
            if mid == model.model_id and f.retry_at > now:
                failed.setdefault(address, f.reason)
        for address, why in sorted(failed.items()):
            parts.append(f"load failed on {address}: {why or 'no reason given'}")
        head = f"{ready} of {model.num_replicas} replicas ready"
        return head + (": " + "; ".join(parts) if parts else "")

    def _snapshot(self) -> Snapshot:
        by_status: dict[str, int] = defaultdict(int)
        for mid, addrs in self._placement.replicas.items():
            for address in addrs:
                session = self._servers.get(address)
                status = self._status(session, mid) if session else None
                by_status[status.value if status else "ASSIGNED"] += 1
        return Snapshot(
            models=len(self._models),
            servers=len(self._servers),
            replicas_by_status=by_status,
            requested_replicas=sum(m.num_replicas for m in self._models.values()),
        )


# Fields whose change makes every server holding the model load it again.
RELOAD_FIELDS = ("checkpoint_path", "overrides")


def reloading(info: ModelInfo, fields: builtins.list[str]) -> ModelInfo:
    """`info` as it stands once the servers start reloading for a change of `fields`: their
    LOADED replicas are LOADING again and none is ready (their last reports predate it)."""
    replicas = [
        r.model_copy(update={"status": ReplicaStatus.LOADING})
        if r.status == ReplicaStatus.LOADED
        else r
        for r in info.replicas
    ]
    reason = f"0 of {info.num_replicas} replicas ready: reloading for the new {', '.join(fields)}"
    return info.model_copy(update={"replicas": replicas, "ready_replicas": 0, "reason": reason})


def _assignment(model: PublishedModel) -> tuple[Assignment, AssignmentKey]:
    a = Assignment(
        model_id=model.model_id,
        model_path=model.model_path,
        checkpoint_path=model.checkpoint_path,
        overrides=model.overrides,
        acls=model.acls,
        uuid=model.uuid,
    )
    return a, assignment_key(a)


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
