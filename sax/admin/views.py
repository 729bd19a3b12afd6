"""What the admin shows of its cell: models with their replicas and why they are short, cell
statistics, the joined servers, the gauges of ``/metrics``, and the WatchLoc and WaitForReady
long polls over each model's ready set.

Read-only over the published models, the fleet and the last placement; nothing here changes
state. A replica is a server the model is placed on, or one still showing a failed load of it
while that (model, server) pair waits out its backoff: a server unloads a failed model as soon
as it is unassigned, so its own report of the failure lasts moments. The uuid a server reports
is never shown, so the server list cannot hand a forger the uuid it would need.
"""

from __future__ import annotations

import time
from collections import defaultdict

from sax.admin.fleet import Fleet
from sax.admin.metrics import Snapshot
from sax.admin.placer import Placer
from sax.admin.published import PublishedModels
from sax.errors import Code, SaxError, invalid, not_found
from sax.schemas import (
    CellStats,
    ModelInfo,
    ModelList,
    PublishedModel,
    ReplicaInfo,
    ReplicaStatus,
    ServerInfo,
    ServerList,
    ServerTypeStat,
    WaitResponse,
    WatchResult,
)


class Views:
    """`watch_timeout_s` bounds a WatchLoc long poll."""

    def __init__(
        self, published: PublishedModels, fleet: Fleet, placer: Placer, watch_timeout_s: float
    ) -> None:
        self.watch_timeout_s = watch_timeout_s
        self._published = published
        self._fleet = fleet
        self._placer = placer

    async def watch(
        self, name: str, admin_id: str, seqno: int, timeout_s: float | None = None
    ) -> WatchResult:
        """WatchLoc: ready data addresses after `seqno`, waiting at most the watch timeout."""
        if seqno < 0:
            raise invalid(f"seqno {seqno} must be non-negative")
        entry = self._published.entry(self._published.key(name))
        if entry is None:
            raise not_found(f"model {name} is not published")
        limit = self.watch_timeout_s if timeout_s is None else min(timeout_s, self.watch_timeout_s)
        return await entry.locations.watch(self._fleet.admin_id, admin_id, seqno, max(limit, 0.0))

    async def wait(self, name: str, num_replicas: int, timeout_s: float) -> WaitResponse:
        """WaitForReady: returns once `num_replicas` replicas are ready; DEADLINE_EXCEEDED says
        why the model is short."""
        mid = self._published.key(name)
        try:
            ready = await self._published.require(mid).ready.wait(num_replicas, timeout_s)
        except SaxError as exc:
            if exc.code == Code.DEADLINE_EXCEEDED:
                reason = self.info(mid).reason if mid in self._published else ""
                raise SaxError(
                    exc.code, f"{mid}: {exc.message}" + (f"; {reason}" if reason else "")
                ) from None
            raise
        return WaitResponse(ready_replicas=ready)

    def info(self, model_id: str) -> ModelInfo:
        """One published model with its replicas, their statuses and, when short, why."""
        model = self._published.require(model_id).model
        fleet = self._fleet
        placed = self._placer.placement.replicas.get(model_id, ())
        now = time.monotonic()
        backoff = {
            a: f for (m, a), f in fleet.failures.items() if m == model_id and f.retry_at > now
        }
        holders = fleet.holders.get(model_id, set())
        replicas = []
        for address in sorted(set(placed) | holders | backoff.keys()):
            session = fleet.get(address)
            if session is None:
                continue
            status = fleet.status(session, model_id)
            report = session.reports.get(model_id)
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
        for address in holders:
            holder = fleet.get(address)
            honoured = holder.honours(model_id, model.uuid) if holder is not None else None
            if honoured is not None:
                methods.update(honoured.method_stats)
        return ModelInfo(
            model_id=model_id,
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

    def models(self) -> ModelList:
        return ModelList(
            models=[self.info(mid) for mid in sorted(e.model.model_id for e in self._published)]
        )

    def stats(self, model_id: str | None = None) -> CellStats:
        """The whole cell, or only the servers `model_id` (published) is placed on."""
        servers = list(self._fleet)
        if model_id is not None:
            self._published.require(model_id)
            placed = set(self._placer.placement.replicas.get(model_id, ()))
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
            num_models=len(self._published),
        )

    def servers(self) -> ServerList:
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
                for s in sorted(self._fleet, key=lambda s: s.address)
            ]
        )

    def snapshot(self) -> Snapshot:
        """The gauges: placed replicas by reported status (ASSIGNED: none reported yet)."""
        by_status: dict[str, int] = defaultdict(int)
        for mid, addrs in self._placer.placement.replicas.items():
            for address in addrs:
                session = self._fleet.get(address)
                status = self._fleet.status(session, mid) if session else None
                by_status[status.value if status else "ASSIGNED"] += 1
        return Snapshot(
            models=len(self._published),
            servers=len(self._fleet),
            replicas_by_status=by_status,
            requested_replicas=sum(e.model.num_replicas for e in self._published),
        )

    def _reason(self, model: PublishedModel, replicas: list[ReplicaInfo], ready: int) -> str:
        if ready >= model.num_replicas:
            return ""
        parts = []
        placement_reason = self._placer.placement.reasons.get(model.model_id)
        if placement_reason:
            parts.append(placement_reason)
        loading = [r.server for r in replicas if r.status in (None, ReplicaStatus.LOADING)]
        if loading:
            parts.append(f"loading on {', '.join(loading)}")
        failed = {r.server: r.failure_reason for r in replicas if r.status == ReplicaStatus.FAILED}
        now = time.monotonic()
        for (mid, address), f in sorted(self._fleet.failures.items()):
            if mid == model.model_id and f.retry_at > now:
                failed.setdefault(address, f.reason)
        for address, why in sorted(failed.items()):
            parts.append(f"load failed on {address}: {why or 'no reason given'}")
        head = f"{ready} of {model.num_replicas} replicas ready"
        return head + (": " + "; ".join(parts) if parts else "")


def reloading(info: ModelInfo, fields: list[str]) -> ModelInfo:
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
