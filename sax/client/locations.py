"""WatchLoc: keep one model's set of ready replica addresses current, in the background.

The loop long-polls ``GET /v1/models/{name}/locations?admin_id=&seqno=``. A reply with
``has_fullset`` replaces the set (always the case after an admin change or from seqno 0, so a new
leader never leaves stale entries behind, unlike Saxml); its changelog is then applied in order.
Transient errors (any error that is not a permanent SaxError, an unexpected exception included)
keep the last known set (an admin outage must not stop the data path) and restart from seqno 0;
NOT_FOUND (the model is not published) and other permanent errors end the watch and
are reported to callers, who then fail fast instead of retrying until their deadline.

The loop is written once, for asyncio (`watch`, and `Watcher`, the task a model's calls share);
`watch_forever` runs it for a blocking caller.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from sax.client.admin import AdminClient, AsyncAdminClient
from sax.client.replicas import (
    PERMANENT,
    POLL_DEADLINE_S,
    ReplicaSet,
    WatchState,
    locations_path,
)
from sax.client.retry import Backoff, Deadline
from sax.errors import Code, SaxError
from sax.naming import ModelId
from sax.schemas import WatchResult

log = logging.getLogger(__name__)

STOP_CHECK_S = 0.2  # how often the blocking `watch_forever` looks at its stop event


async def watch(
    admin: AsyncAdminClient, model: ModelId, on_result: Callable[[WatchResult], None]
) -> SaxError:
    """Runs the WatchLoc loop until cancelled or a permanent error, which it returns."""
    state = WatchState()
    backoff = Backoff(Deadline(None))
    while True:
        try:
            raw = await admin.request(
                "GET",
                locations_path(model),
                params=state.params(),
                deadline=Deadline.after(POLL_DEADLINE_S),
            )
            result = WatchResult.model_validate(raw)
            state.advance(result)
            on_result(result)
            backoff = Backoff(Deadline(None))
        except SaxError as exc:
            if exc.code in PERMANENT:
                return exc
            log.info("WatchLoc(%s): %s; retrying", model, exc)
            state.reset()
            await asyncio.sleep(backoff.next_delay() or 0.0)
        except Exception:  # a storage error, a reply that is not a WatchResult: transient
            log.warning("WatchLoc(%s) failed unexpectedly; retrying", model, exc_info=True)
            state.reset()
            await asyncio.sleep(backoff.next_delay() or 0.0)


def watch_forever(
    admin: AdminClient,
    model: ModelId,
    on_result: Callable[[WatchResult], None],
    stop: threading.Event,
) -> SaxError:
    """`watch`, blocking, on `admin`'s portal (`on_result` runs on the portal's thread): returns
    the permanent error that ends it, or CANCELLED within `STOP_CHECK_S` of `stop` being set."""
    future = admin.portal.submit(watch, admin.aio, model, on_result)
    try:
        while True:
            try:
                return admin.portal.result(future, STOP_CHECK_S)
            except TimeoutError:
                if stop.is_set():
                    return SaxError(Code.CANCELLED, f"watch of {model} stopped")
            except SaxError as exc:  # CANCELLED: the portal was closed
                return exc
    finally:
        future.cancel()


class Watcher:
    """A task of the running loop that keeps `replicas` current until `stop` or a permanent
    error (`replicas.error`, `done`). `wait_first` holds a caller until the first answer, so the
    first call after opening a model does not fail with an empty set (a Saxml fail-fast quirk).
    `on_done` is told when it ends, however it ends."""

    def __init__(
        self,
        admin: AsyncAdminClient,
        model: ModelId,
        on_done: Callable[[Watcher], None] | None = None,
    ) -> None:
        self.model = model
        self.replicas = ReplicaSet()
        self.done = False
        self._on_done = on_done
        self._known = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(admin))

    def _on_result(self, result: WatchResult) -> None:
        self.replicas.apply(result)
        self._known.set()

    async def _run(self, admin: AsyncAdminClient) -> None:
        error = SaxError(Code.CANCELLED, f"the watch of {self.model} stopped")
        try:
            error = await watch(admin, self.model, self._on_result)
        finally:  # even on an unexpected error or cancellation: callers fail fast and the
            # registry frees the slot, so the next call starts a new watch
            self.replicas.fail(error)
            self.done = True
            self._known.set()
            if self._on_done is not None:
                self._on_done(self)

    async def wait_first(self, deadline: Deadline) -> bool:
        try:
            await asyncio.wait_for(self._known.wait(), deadline.remaining())
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        self._task.cancel()


class Watchers:
    """The watchers of one event loop, one per (sax_root, model id), shared by every model of
    that id on the loop. A watcher that ends leaves the registry, so a model published again
    after a NOT_FOUND is found again by the next call, and a dropped model leaves nothing."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, ModelId], Watcher] = {}

    def __contains__(self, key: tuple[str, ModelId]) -> bool:
        return key in self._by_key

    def get(self, sax_root: str, model: ModelId) -> Watcher:
        """The running watcher of `model` under `sax_root`, started on first use."""
        key = (sax_root, model)
        watcher = self._by_key.get(key)
        if watcher is None:
            admin = AsyncAdminClient(sax_root, model.cell_id)
            watcher = Watcher(admin, model, on_done=lambda done: self._release(key, done))
            self._by_key[key] = watcher
        return watcher

    def stop(self) -> None:
        for watcher in list(self._by_key.values()):
            watcher.stop()

    def _release(self, key: tuple[str, ModelId], watcher: Watcher) -> None:
        if self._by_key.get(key) is watcher:
            del self._by_key[key]


def print_changes(write: Callable[[str], None]) -> Callable[[WatchResult], None]:
    """A listener that prints a WatchLoc stream the way ``saxutil watch`` does:
    ``Reset`` and ``+ addr`` lines on a full set, then ``+ addr`` / ``- addr`` per change."""

    def listener(result: WatchResult) -> None:
        if result.has_fullset:
            write("Reset")
            for address in sorted(result.values):
                write(f"+ {address}")
        for mutation in result.changelog:
            write(f"{'+' if mutation.op == 'add' else '-'} {mutation.address}")

    return listener
