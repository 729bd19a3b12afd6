"""The admin's control plane for one cell: a small coordinator over parts named for what they hold.

`Cell` is a plain object that the routes (`sax.admin.routes`) and the tests drive directly:
- `published` (`sax.admin.published`): the published models; publish, update and unpublish are
  persisted before they return, serialized, and refused when this admin is not the leader;
- `fleet` (`sax.admin.fleet`): the servers' join sessions, the join long poll, liveness, and
  load failures (retried with backoff, elsewhere when another server can take the model);
- `placer` (`sax.admin.placer`): pure placement on events, coalesced, and the ready sets;
- `views` (`sax.admin.views`): model info and why it is short, stats, servers, WatchLoc.

Two supervised loops run: the placer, and a reaper that declares dead servers and ends
backoffs (it never places). A loop that raises logs it and goes on; `liveness` reports a
stopped one. Unpublish unloads at once, so the name can be republished immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sax.admin.fleet import Disconnected, Fleet
from sax.admin.metrics import AdminMetrics
from sax.admin.placer import Placer
from sax.admin.published import Persist, PublishedModels
from sax.admin.views import Views, reloading
from sax.auth.acl import OPEN, Access
from sax.errors import unavailable
from sax.naming import CellId
from sax.schemas import (
    CellState,
    CellStats,
    JoinRequest,
    JoinResponse,
    ModelInfo,
    ModelList,
    Probe,
    PublishRequest,
    ServerList,
    UpdateRequest,
    WaitResponse,
    WatchResult,
)

log = logging.getLogger(__name__)


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
        self.metrics = AdminMetrics()
        self._is_leader: Callable[[], bool] = lambda: True
        self.published = PublishedModels(cell, persist, self.check_leader)
        self.fleet = Fleet(
            admin_id,
            self.published,
            self.metrics,
            join_poll_timeout_s=join_poll_timeout_s,
            server_ttl_s=server_ttl_s,
            disconnect_grace_s=disconnect_grace_s,
            failure_backoff_s=failure_backoff_s,
            max_failure_backoff_s=max_failure_backoff_s,
            adopt_window_s=adopt_window_s,
        )
        self.placer = Placer(self.published, self.fleet, self.metrics)
        self.views = Views(self.published, self.fleet, self.placer, watch_timeout_s)
        self.metrics.watch_gauges(self.views.snapshot)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    def restore(self, state: CellState) -> None:
        """Loads published models from state.json (before `start`); servers re-join on their own."""
        self.published.restore(state)
        self.placer.request()

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

    def check_leader(self) -> None:
        """UNAVAILABLE unless this admin leads the cell."""
        if not self._is_leader():
            raise unavailable("not the leader")

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Starts the placement and liveness loops; a no-op when they already run."""
        if not self._tasks:
            self.fleet.start_adopting()
            placer = self.placer.start()
            self._tasks = [placer, asyncio.create_task(self._reaper(), name="sax-reaper")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        self.placer.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reaper(self) -> None:
        """Declares dead servers and ends backoffs; never decides placement itself."""
        fleet = self.fleet
        tick = max(0.02, min(0.1, fleet.disconnect_grace_s / 4, fleet.server_ttl_s / 10))
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                if fleet.reap(now):
                    self.placer.request()
                self.placer.retry_due(now)
            except Exception:
                log.exception("the liveness check failed; it runs again next tick")

    # ------------------------------------------------------------ admin API

    async def publish(self, request: PublishRequest, access: Access = OPEN) -> ModelInfo:
        """Needs the cell's admin ACL (`sax.auth.acl`), checked before anything else."""
        mid = await self.published.publish(request, access)
        self.placer.request()
        return self.views.info(mid)

    async def update(self, name: str, request: UpdateRequest, access: Access = OPEN) -> ModelInfo:
        """Needs the cell's or the model's admin ACL."""
        updated = await self.published.update(name, request, access)
        if updated.changed:
            self.placer.request()
        info = self.views.info(updated.model_id)
        return reloading(info, updated.reloads) if updated.reloads else info

    async def unpublish(self, name: str, access: Access = OPEN) -> None:
        """Needs the cell's or the model's admin ACL."""
        self.fleet.forget_model(await self.published.unpublish(name, access))
        self.placer.request()

    async def get(self, name: str) -> ModelInfo:
        return self.views.info(self.published.key(name))

    async def list(self) -> ModelList:
        return self.views.models()

    async def watch(
        self, name: str, admin_id: str, seqno: int, timeout_s: float | None = None
    ) -> WatchResult:
        return await self.views.watch(name, admin_id, seqno, timeout_s)

    async def wait(self, name: str, num_replicas: int, timeout_s: float) -> WaitResponse:
        return await self.views.wait(name, num_replicas, timeout_s)

    async def stats(self, name: str | None = None) -> CellStats:
        return self.views.stats(self.published.key(name) if name else None)

    async def servers(self) -> ServerList:
        return self.views.servers()

    async def placed(self, timeout_s: float = 5.0) -> None:
        """Returns once every event so far has been reflected in a placement, or after
        `timeout_s` (placement keeps failing: the caller goes on with the last one)."""
        await self.placer.placed(timeout_s)

    async def join(
        self,
        request: JoinRequest,
        disconnected: Disconnected | None = None,
        access: Access = OPEN,
    ) -> JoinResponse:
        """A model server's long-poll join (`sax.admin.fleet`): records its report and answers
        with its desired assignment, at once or after holding it. Needs the cell's admin ACL."""
        self.check_leader()
        access.require_cell_admin("join", str(self.cell))
        return await self.fleet.join(request, access.principal, disconnected, self.placer.settle)
