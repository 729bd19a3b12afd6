"""Whether and how long a data request may run: in-flight bound, deadline, disconnects.

One `Gate` per (model, method). `Gate.run` admits a call (RESOURCE_EXHAUSTED 429 beyond
`limit` in flight), bounds it by a deadline (DEADLINE_EXCEEDED 504, the engine call is cancelled)
and, given the ASGI `receive` of the request, cancels it when the client disconnects (the
servable aborts its engine request on cancellation). Every admitted call is counted once in the
gate's `RequestStats`, success or error; the slot is always released (Saxml leaked it when a
queued request's deadline expired).

ACLs are checked before a gate is taken (`sax.server.access`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from sax.errors import Code, SaxError
from sax.server.stats import RequestStats

T = TypeVar("T")

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class _DisconnectWatch:
    """Cancels `task` when the client closes the connection (ASGI ``http.disconnect``)."""

    __slots__ = ("fired", "task", "watcher")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self.fired = False
        self.task = task
        self.watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        # The body is already read, so the next message is the disconnect (or the end of the
        # response, after which this watcher is cancelled anyway).
        while (await receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        self.task.cancel()


@contextlib.contextmanager
def cancelled_on_disconnect(receive: Receive | None) -> Iterator[None]:
    """Cancels the current task when the client disconnects; raises CANCELLED (499) then."""
    task = asyncio.current_task()
    if receive is None or task is None:
        yield
        return
    watch = _DisconnectWatch(receive, task)
    try:
        yield
    except asyncio.CancelledError:
        if watch.fired:
            task.uncancel()
            raise SaxError(Code.CANCELLED, "the client disconnected") from None
        raise
    finally:
        watch.watcher.cancel()


class Gate:
    """Admission and accounting for one (model, method)."""

    __slots__ = ("limit", "method", "model_id", "observe_latency", "stats")

    def __init__(
        self,
        model_id: str,
        method: str,
        limit: int,
        stats: RequestStats,
        observe_latency: Callable[[float], None] | None = None,
    ) -> None:
        """`observe_latency(seconds)` gets each successful request's latency (a histogram)."""
        self.model_id = model_id
        self.method = method
        self.limit = limit
        self.stats = stats
        self.observe_latency = observe_latency

    def admit(self, cost: int = 1) -> float:
        """Takes `cost` slots (a batched request's items) or raises RESOURCE_EXHAUSTED; returns
        the start time for `release`. An idle gate admits any batch, however large, so one
        request is never refused for its own size alone."""
        stats = self.stats
        if stats.pending >= self.limit or (stats.pending and stats.pending + cost > self.limit):
            raise SaxError(
                Code.RESOURCE_EXHAUSTED,
                f"too many requests: {self.model_id} {self.method} has {self.limit} in flight",
            )
        stats.pending += cost
        return stats.now()

    def release(self, start: float, ok: bool, cost: int = 1) -> None:
        self.stats.pending -= cost
        self.stats.record(start, ok)
        if ok and self.observe_latency is not None:
            self.observe_latency(self.stats.now() - start)

    def deadline_error(self, timeout_s: float) -> SaxError:
        return SaxError(
            Code.DEADLINE_EXCEEDED,
            f"{self.model_id} {self.method} did not finish within its {timeout_s:g} s deadline",
        )

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        timeout_s: float,
        receive: Receive | None = None,
        cost: int = 1,
    ) -> T:
        """Runs `call()` admitted as one request of `cost` items, under a deadline, cancelled
        if the client disconnects."""
        start = self.admit(cost)
        ok = False
        try:
            with cancelled_on_disconnect(receive):
                try:
                    async with asyncio.timeout(timeout_s) as scope:
                        result = await call()
                except TimeoutError:
                    if scope.expired():
                        raise self.deadline_error(timeout_s) from None
                    raise
            ok = True
            return result
        finally:
            self.release(start, ok, cost)
