"""`ModelServer`: the replicas one server holds, their lifecycle, and lookups for the data routes.

The admin's assignment is the desired state; `apply` reconciles towards it without waiting:
missing models load in the background (at most `max_concurrent_loads` at once), models no longer
assigned unload, and a model whose model path, checkpoint, overrides or uuid changed is unloaded
and loaded again (ACL changes apply in place). A load never blocks serving other models.

Lifecycle per model id: LOADING -> LOADED | FAILED(reason); UNLOADING -> gone. A FAILED model
stays FAILED while the admin keeps assigning the same spec (the admin retries failed loads,
preferring another server); dropping and re-assigning it, or changing its uuid, loads it again.
Every status change fires the listeners (the join loop sends a fresh join at once).

Supervision: a load runs at most its servable's ``load_timeout_s`` (then FAILED "load timed out
after N s", and what it built is freed); a cancelled load and every unload are bounded by
``unload_timeout_s`` and then abandoned with a log line, so no model id wedges. A supervisor loop
asks each LOADED servable for its `health` about twice a second; a dead engine moves its model
to FAILED with the reason (requests get a retryable 503) and the admin re-places it through the
failed-load path.

Model paths resolve only through `sax.server.registry.resolve`: never an import from a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any

from prometheus_client import Histogram

from sax.errors import Code, SaxError, not_found, unavailable
from sax.schemas import Assignment, ModelReport, Probe, ReplicaStatus
from sax.server import registry
from sax.server.admission import Gate
from sax.server.options import ServerOptions
from sax.server.servable import LoadSpec, Servable
from sax.server.stats import RequestStats, request_latency

log = logging.getLogger(__name__)

DRAIN_S = 5.0  # how long an unload waits for admitted requests to finish
HEALTH_POLL_S = 0.5  # how often loaded engines are checked for death


def spec_of(assignment: Assignment, chip: str = "cpu", topology: str = "1") -> LoadSpec:
    return LoadSpec(
        model_id=assignment.model_id,
        model_path=assignment.model_path,
        checkpoint_path=assignment.checkpoint_path,
        overrides=dict(assignment.overrides),
        acls=dict(assignment.acls),
        uuid=assignment.uuid,
        platform_chip=chip,
        platform_topology=topology,
    )


def needs_reload(old: LoadSpec, new: LoadSpec) -> bool:
    return (
        old.model_path != new.model_path
        or old.checkpoint_path != new.checkpoint_path
        or dict(old.overrides) != dict(new.overrides)
        or old.uuid != new.uuid
    )


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, SaxError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def advertised_address(opts: ServerOptions) -> str:
    """The host:port clients and the admin use: `data_address`, else the listening address,
    with a wildcard host replaced by this machine's address."""
    if opts.data_address:
        return opts.data_address
    host = opts.host
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"[{host}]:{opts.port}" if ":" in host else f"{host}:{opts.port}"


class Replica:
    """One model's replica on this server: its spec, status and per-method gates.

    `built` is the servable object from the start of its load until it is freed (None before
    and after); `servable` returns it only while `status` is LOADED.
    """

    def __init__(self, spec: LoadSpec, limit: int, latency: Histogram | None = None) -> None:
        """`limit`: requests in flight per method; `latency`: the server's request latency
        histogram, observed per (model, method)."""
        self.spec = spec
        self.status = ReplicaStatus.LOADING
        self.failure_reason = ""
        self.built: Servable | None = None
        self.task: asyncio.Task[None] | None = None
        self.limit = limit
        self.latency = latency
        self.gates: dict[str, Gate] = {}
        self.engine_died = False  # FAILED after serving: its engine died

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def servable(self) -> Servable:
        """The servable of a LOADED replica (NOT_FOUND if it was unloaded meanwhile)."""
        servable = self.built
        if servable is None or self.status is not ReplicaStatus.LOADED:
            raise not_found(f"model {self.model_id} is not loaded on this server")
        return servable

    def gate(self, method: str) -> Gate:
        """The gate of `method`; INVALID_ARGUMENT naming what the model serves if it does not
        serve `method` (a caller's mistake, not the server's: a 400, never retried). The caller
        checks the ACL (`spec.acls`) first."""
        gate = self.gates.get(method)
        if gate is None:
            raise SaxError(
                Code.INVALID_ARGUMENT,
                f"model {self.model_id} ({self.spec.model_path}) does not serve {method}; it"
                f" serves {', '.join(sorted(self.gates)) or 'nothing'}",
            )
        return gate

    def mark_loaded(self, servable: Servable) -> None:
        """Makes the model servable: one gate (admission + stats) per declared method."""
        self.built = servable
        self.gates = {m: self._gate(m) for m in sorted(servable.methods)}
        self.status = ReplicaStatus.LOADED

    def _gate(self, method: str) -> Gate:
        latency = self.latency
        observe = latency.labels(self.model_id, method).observe if latency is not None else None
        return Gate(self.model_id, method, self.limit, RequestStats(), observe)

    def forget_latency(self) -> None:
        """Stops exporting this replica's latency series (it is gone from this server)."""
        if self.latency is not None:
            for method in self.gates:
                with contextlib.suppress(KeyError):
                    self.latency.remove(self.model_id, method)

    def report(self) -> ModelReport:
        return ModelReport(
            model_id=self.spec.model_id,
            model_path=self.spec.model_path,
            checkpoint_path=self.spec.checkpoint_path,
            uuid=self.spec.uuid,
            status=self.status,
            failure_reason=self.failure_reason,
            method_stats={m: g.stats.snapshot() for m, g in self.gates.items()},
        )


class ModelServer:
    """Replicas by model id plus their lifecycle; the HTTP app and the join loop drive it."""

    def __init__(self, opts: ServerOptions) -> None:
        self.opts = opts
        self.cell = opts.cell
        self.address = advertised_address(opts)
        self.admin_address = ""
        self.admin_id = ""
        self.joined_at: float | None = None  # monotonic time of the last join reply
        self._replicas: dict[str, Replica] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._load_slots = asyncio.Semaphore(max(1, opts.max_concurrent_loads))
        self._listeners: list[Callable[[], None]] = []
        self._prefix = f"{opts.cell}/"
        self.version = 0  # bumps on every status change
        self.backend_errors: dict[str, str] = {}  # backend -> why it is unavailable
        self.draining = False  # leaving the cell: the admin stops routing here
        self._supervisor: asyncio.Task[None] | None = None
        self.latency = request_latency()  # exported by `sax.server.metrics.server_registry`

    def prepare_backends(self) -> dict[str, str]:
        """Imports the enabled backends and sets their process environment; call on the main
        thread before serving (`registry.prepare_backends`). Returns backend -> why it is
        unavailable; the rest serve."""
        self.backend_errors = registry.prepare_backends(set(self.opts.backends) or None)
        for backend, why in sorted(self.backend_errors.items()):
            log.error("Backend %s is unavailable: %s", backend, why)
        return self.backend_errors

    def liveness(self) -> Probe:
        """`/livez`: the event loop answers and the engine supervisor runs (restart me if not)."""
        supervisor = self._supervisor
        if supervisor is not None and supervisor.done():
            return Probe(status="unavailable", checks={"engine_supervisor": "stopped"})
        return Probe(status="ok", checks={"event_loop": "ok", "engine_supervisor": "ok"})

    def readiness(self, now: float, joined_at: float | None, max_age_s: float) -> Probe:
        """`/readyz`: route to me? Joined to the admin within `max_age_s` (monotonic `now` and
        `joined_at`), not draining, and every model it holds LOADED. Unavailable backends are
        listed but do not make the server unready (the others serve)."""
        checks: dict[str, str] = {}
        if joined_at is None:
            checks["admin"] = "not joined yet"
        elif now - joined_at > max_age_s:
            checks["admin"] = f"no join reply for {now - joined_at:.0f} s"
        else:
            checks["admin"] = "ok"
        checks["draining"] = "leaving the cell" if self.draining else "ok"
        not_ready = [
            f"{m.model_id} {m.status.value}"
            + (f" ({m.failure_reason})" if m.failure_reason else "")
            for m in self._replicas.values()
            if m.status is not ReplicaStatus.LOADED
        ]
        checks["models"] = "; ".join(not_ready) or "ok"
        ok = all(v == "ok" for v in checks.values())
        for backend, why in sorted(self.backend_errors.items()):
            checks[f"backend {backend}"] = why
        return Probe(status="ok" if ok else "unavailable", checks=checks)

    def engine_pids(self) -> dict[str, list[int]]:
        """Model id -> process ids of its engine processes (LOADED models that have some)."""
        pids = {}
        for replica in self._replicas.values():
            servable = replica.built
            if servable is not None and replica.status is ReplicaStatus.LOADED:
                if found := servable.engine_pids():
                    pids[replica.model_id] = found
        return pids

    def inflight(self) -> int:
        """Data requests admitted and not yet finished, over every model."""
        return sum(g.stats.pending for m in self._replicas.values() for g in m.gates.values())

    async def drain(self, timeout_s: float) -> bool:
        """Waits until no data request is in flight, at most `timeout_s`; True if drained."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.inflight() and loop.time() < deadline:  # noqa: ASYNC110 (gates have no event)
            await asyncio.sleep(0.02)
        return self.inflight() == 0

    def _ensure_supervisor(self) -> None:
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(
                self._watch_engines(), name="sax-engine-health"
            )

    async def _watch_engines(self) -> None:
        """Moves each LOADED model whose engine died to FAILED; an unexpected error is logged
        and the loop goes on."""
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            for replica in list(self._replicas.values()):
                servable = replica.built
                if replica.status is not ReplicaStatus.LOADED or servable is None:
                    continue
                try:
                    reason = servable.health()
                except Exception as exc:
                    reason = f"the engine health check failed: {failure_reason(exc)}"
                if reason:
                    self._engine_died(replica, reason)

    def _engine_died(self, replica: Replica, reason: str) -> None:
        log.error("The engine of %s died: %s", replica.model_id, reason)
        replica.status = ReplicaStatus.FAILED
        replica.failure_reason = reason
        replica.engine_died = True
        self._spawn(self._free(replica), replica)
        self._changed()

    # ------------------------------------------------------------------ observers

    def add_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls `callback()` on every status change; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def _changed(self) -> None:
        self.version += 1
        for callback in list(self._listeners):
            callback()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Waits until `predicate()` holds after a status change; TimeoutError otherwise."""
        event = asyncio.Event()
        remove = self.add_listener(event.set)
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    await event.wait()
                    event.clear()
        finally:
            remove()

    # ------------------------------------------------------------------ lookups

    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def get(self, model_id: str) -> Replica | None:
        return self._replicas.get(model_id)

    def status(self, model_id: str) -> ReplicaStatus | None:
        replica = self._replicas.get(model_id)
        return replica.status if replica else None

    def model_id(self, name: str) -> str:
        """A short name or a full id -> the full id in this server's cell."""
        return name if name.startswith("/") else self._prefix + name

    def loaded(self, name: str) -> Replica:
        """The LOADED model named `name` (short or full); NOT_FOUND otherwise (clients retry
        another replica on 404)."""
        replica = self._replicas.get(name if name.startswith("/") else self._prefix + name)
        if replica is not None and replica.status is ReplicaStatus.LOADED:
            return replica
        model_id = self.model_id(name)
        if replica is None:
            raise not_found(f"model {model_id} is not loaded on this server")
        if replica.status is ReplicaStatus.LOADING:
            raise not_found(f"model {model_id} is still loading on this server")
        if replica.status is ReplicaStatus.FAILED and replica.engine_died:
            raise unavailable(f"model {model_id} failed on this server: {replica.failure_reason}")
        if replica.status is ReplicaStatus.FAILED:
            raise not_found(
                f"model {model_id} failed to load on this server: {replica.failure_reason}"
            )
        raise not_found(f"model {model_id} is unloading on this server")

    def reports(self) -> list[ModelReport]:
        return [m.report() for m in self._replicas.values()]

    # ------------------------------------------------------------------ lifecycle

    async def apply(self, assignment: Iterable[Assignment]) -> None:
        """Reconciles towards `assignment`; returns at once, loads and unloads run behind."""
        self._ensure_supervisor()
        chip, topology = self.opts.chip, self.opts.topology
        desired = {a.model_id: spec_of(a, chip, topology) for a in assignment}
        changed = False
        for model_id, held in list(self._replicas.items()):
            if model_id not in desired and held.status is not ReplicaStatus.UNLOADING:
                self._start_unload(held)
                changed = True
        for model_id, spec in desired.items():
            replica = self._replicas.get(model_id)
            if replica is None:
                self._start_load(spec, after=None)
                changed = True
            elif replica.status is ReplicaStatus.UNLOADING:
                self._start_load(spec, after=replica.task)
                changed = True
            elif needs_reload(replica.spec, spec):
                self._start_load(spec, after=self._start_unload(replica))
                changed = True
            elif dict(replica.spec.acls) != dict(spec.acls):
                replica.spec = replace(replica.spec, acls=spec.acls)
        if changed:
            self._changed()

    async def settle(self, timeout_s: float | None = None) -> None:
        """Waits until no load or unload is running (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Unloads every model and stops the supervisor (graceful stop of the process); each
        unload is bounded by ``unload_timeout_s``."""
        timeout_s = timeout_s if timeout_s is not None else self.opts.unload_timeout_s + 10
        await self.apply([])
        try:
            await self.settle(timeout_s)
        except TimeoutError:
            log.warning("models still unloading after %.0f s; exiting anyway", timeout_s)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    def _spawn(self, coro: Coroutine[Any, Any, None], replica: Replica) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        replica.task = task
        return task

    def _start_load(self, spec: LoadSpec, after: asyncio.Task[None] | None) -> None:
        replica = Replica(spec, self.opts.max_inflight_per_method, self.latency)
        self._replicas[spec.model_id] = replica
        self._spawn(self._load(replica, after), replica)

    def _start_unload(self, replica: Replica) -> asyncio.Task[None]:
        previous = replica.task
        replica.status = ReplicaStatus.UNLOADING
        return self._spawn(self._unload(replica, previous), replica)

    def _servable_class(self, spec: LoadSpec) -> type[Servable]:
        cls = registry.resolve(spec.model_path)
        if self.opts.backends and cls.backend not in self.opts.backends:
            raise SaxError(
                Code.FAILED_PRECONDITION,
                f"model_path {spec.model_path!r} needs backend {cls.backend!r}, and this server"
                f" serves only {', '.join(self.opts.backends)}",
            )
        return cls

    async def _load(self, replica: Replica, after: asyncio.Task[None] | None) -> None:
        spec = replica.spec
        try:
            if after is not None:
                await asyncio.wait([after])
            servable = self._servable_class(spec)(spec)
            replica.built = servable  # so that an unload during the load frees it
            async with self._load_slots:
                log.info(
                    "Loading %s (%s, checkpoint %s)",
                    spec.model_id,
                    spec.model_path,
                    spec.checkpoint_path,
                )
                await self._bounded_load(servable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            replica.failure_reason = failure_reason(exc)
            log.warning("Failed to load %s: %s", spec.model_id, replica.failure_reason)
            await self._free(replica)
            if replica.status is ReplicaStatus.LOADING:
                replica.status = ReplicaStatus.FAILED
                self._changed()
            return
        if replica.status is ReplicaStatus.LOADING:
            replica.mark_loaded(servable)
            log.info("Loaded %s", spec.model_id)
            self._changed()

    async def _bounded_load(self, servable: Servable) -> None:
        """`servable.load()` for at most its ``load_timeout_s``; a timed-out or cancelled load
        is cancelled and given ``unload_timeout_s`` to clean up, so its load slot is freed in
        bounded time even if it ignores cancellation."""
        timeout_s = float(getattr(servable.config, "load_timeout_s", 900.0))
        loading = asyncio.ensure_future(servable.load())
        try:
            done, _ = await asyncio.wait([loading], timeout=timeout_s)
        except asyncio.CancelledError:
            await self._stop_load(loading, servable)
            raise
        if not done:
            await self._stop_load(loading, servable)
            raise SaxError(Code.DEADLINE_EXCEEDED, f"load timed out after {timeout_s:g} s")
        loading.result()

    async def _stop_load(self, loading: asyncio.Future[None], servable: Servable) -> None:
        loading.cancel()
        done, _ = await asyncio.wait([loading], timeout=self.opts.unload_timeout_s)
        if not done:
            log.error(
                "The load of %s ignored cancellation for %.0f s; abandoning it",
                servable.spec.model_id,
                self.opts.unload_timeout_s,
            )
            loading.add_done_callback(_consume)
        elif not loading.cancelled() and loading.exception() is not None:
            log.debug("Cancelled load of %s: %s", servable.spec.model_id, loading.exception())

    async def _unload(self, replica: Replica, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            done, _ = await asyncio.wait([previous], timeout=self.opts.unload_timeout_s + 5)
            if not done:
                log.error("Loading %s did not stop; unloading it anyway", replica.model_id)
        # New requests already get NOT_FOUND (and go to another replica); let admitted ones
        # finish for a while before the engine goes away.
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while (  # noqa: ASYNC110 (polls only while unloading; gates have no event to wait on)
            any(g.stats.pending for g in replica.gates.values())
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.02)
        await self._free(replica)
        if self._replicas.get(replica.model_id) is replica:
            del self._replicas[replica.model_id]
            replica.forget_latency()
        log.info("Unloaded %s", replica.model_id)
        self._changed()

    async def _free(self, replica: Replica) -> None:
        servable, replica.built = replica.built, None
        if servable is None:
            return
        unloading = asyncio.ensure_future(servable.unload())
        try:
            done, _ = await asyncio.wait([unloading], timeout=self.opts.unload_timeout_s)
        except asyncio.CancelledError:
            unloading.add_done_callback(_consume)
            raise
        if not done:
            log.error(
                "Unloading %s took over %.0f s; abandoning it",
                replica.model_id,
                self.opts.unload_timeout_s,
            )
            unloading.add_done_callback(_consume)
        elif unloading.exception() is not None:
            log.error("Error unloading %s", replica.model_id, exc_info=unloading.exception())


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieves an abandoned future's outcome so asyncio does not warn about it."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("An abandoned load or unload failed: %s", future.exception())
