"""Placement on events: coalesced requests, one supervised background run, ready sets after it.

Placement (`sax.admin.placement.place`, a pure function) is recomputed on events only: publish,
update, unpublish, a join that changes what a server holds or can hold, a death, and the end of
a load-failure backoff (`retry_due`, called by the cell's reaper). Requests are coalesced into
one background run; no periodic tick decides placement. Before the cell starts (and after it
stops), a request places inline.

Each run installs every server's desired assignment into its session (which wakes a held join
when it changed) and recomputes the ready replicas of every model: LOADED with the published
uuid on a server still assigned the model. They feed WatchLoc and WaitForReady, so both are set
from reports, never counted up and down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from sax.admin.fleet import Fleet, JoinChange, ServerSession
from sax.admin.metrics import AdminMetrics
from sax.admin.placement import Placement, ServerView, place
from sax.admin.published import PublishedModels
from sax.admin.watch import Signal
from sax.schemas import ReplicaStatus

log = logging.getLogger(__name__)


class Placer:
    """`placement` is the last one installed (model id -> servers, and why short)."""

    def __init__(self, published: PublishedModels, fleet: Fleet, metrics: AdminMetrics) -> None:
        self.placement = Placement({}, {}, {})
        self._published = published
        self._fleet = fleet
        self._metrics = metrics
        self._background = False
        self._kick = asyncio.Event()
        self._requested = 0
        self._done = 0
        self._placed = Signal()
        self._retry_at: float | None = None

    def start(self) -> asyncio.Task[None]:
        """Places in a background task from now on (once at once); the caller owns the task."""
        self._background = True
        self._kick.set()
        return asyncio.create_task(self._loop(), name="sax-placer")

    def stop(self) -> None:
        """Requests place inline again; the caller cancels the task `start` returned."""
        self._background = False

    def request(self) -> None:
        self._requested += 1
        if self._background:
            self._kick.set()
        else:
            self.place_now()
            self._done = self._requested

    async def placed(self, timeout_s: float = 5.0) -> None:
        """Returns once every request so far has been reflected in a placement, or after
        `timeout_s` (placement keeps failing: the caller goes on with the last one)."""
        target = self._requested
        deadline = time.monotonic() + timeout_s
        while self._done < target and self._background and time.monotonic() < deadline:
            await self._placed.wait(1.0)

    async def settle(self, change: JoinChange) -> None:
        """What a join needs of placement (`sax.admin.fleet.Fleet.join`)."""
        if change.replan:
            self.request()
            if change.wait:
                await self.placed()
        self.refresh(mid for mid in change.touched if mid in self._published)

    def retry_due(self, now: float) -> None:
        """Places again once the earliest load-failure backoff has ended."""
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.request()

    async def _loop(self) -> None:
        """Places on every kick. A placement that raises is logged and retried with backoff;
        waiters in `placed` are released only by a placement that ran."""
        failures = 0
        while True:
            await self._kick.wait()
            self._kick.clear()
            target = self._requested
            try:
                self.place_now()
            except Exception:
                failures += 1
                log.exception("placement failed (%d in a row); retrying", failures)
                await asyncio.sleep(min(1.0, 0.05 * 2**failures))
                self._kick.set()
                continue
            failures = 0
            self._done = target
            self._placed.fire()

    def place_now(self) -> None:
        started = time.perf_counter()
        now = time.monotonic()
        published = self._published
        placement = place(
            (e.model for e in published),
            [self._view(s) for s in self._fleet],
            self._fleet.failures,
            now,
        )
        for session in self._fleet:
            entries = [published.require(m) for m in placement.assignment.get(session.address, ())]
            session.set_desired(tuple(e.assignment for e in entries), tuple(e.key for e in entries))
        self.placement = placement
        self.refresh(e.model.model_id for e in published)
        done = time.perf_counter()
        for entry in published:
            mid = entry.model.model_id
            if entry.published_at is not None and placement.replicas.get(mid):
                self._metrics.publish_to_assignment.observe(done - entry.published_at)
                entry.published_at = None
        pending = [f.retry_at for f in self._fleet.failures.values() if f.retry_at > now]
        self._retry_at = min(pending) if pending else None
        self._metrics.placement_latency.observe(done - started)

    def refresh(self, model_ids: Iterable[str]) -> None:
        """Sets the ready sets of `model_ids` (published) from the servers' reports."""
        fleet = self._fleet
        for mid in model_ids:
            entry = self._published.require(mid)
            addrs = []
            for address in self.placement.replicas.get(mid, ()):
                session = fleet.get(address)
                if session is not None and fleet.status(session, mid) == ReplicaStatus.LOADED:
                    addrs.append(session.data_address)
            entry.locations.set_values(addrs)
            entry.ready.set(len(addrs))

    def _view(self, session: ServerSession) -> ServerView:
        fleet = self._fleet
        replicas: dict[str, ReplicaStatus | None] = {
            a.model_id: fleet.status(session, a.model_id) for a in session.desired
        }
        for mid in session.reports:
            if mid in self._published and mid not in replicas:
                replicas[mid] = fleet.status(session, mid)
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
