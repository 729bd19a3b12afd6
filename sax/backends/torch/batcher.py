"""`Batcher`: one device thread per loaded model that runs concurrent requests as batches.

Why: a vision forward pass over 32 images costs far less than 32 passes over one, so requests
that arrive together should share one. Each request names a *lane* (one batch function, e.g.
``classify`` or ``embed_text``) and waits on an asyncio future; the thread takes the lane of the
oldest waiting request, waits until that request is ``max_wait_s`` old or ``max_batch_size``
requests of that lane are queued, whichever comes first, and calls the lane's function once with
their inputs. Under load the queue already holds a full batch and nothing waits; an idle model
adds at most ``max_wait_s`` to a lone request.

Contracts:
- A lane function takes a list of inputs and returns one output per input, in order; an
  exception fails every request of that batch with it (`SaxError`s pass through unchanged, others
  become INTERNAL with a request id; their text goes to the log only).
- A caller that is cancelled (deadline, client disconnect) before its batch starts is dropped
  from the queue; once its batch runs, the result is discarded.
- `close` stops the thread after the batch in progress and fails queued requests with
  UNAVAILABLE (503, clients retry another replica). A thread that dies of an unexpected error
  does the same and records why in `failure`; `alive` is False from then on.
- All device work of the model runs on this one thread, so torch never sees two forward passes
  of one model at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sax.errors import Code, SaxError, internal, unavailable

log = logging.getLogger(__name__)

BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(eq=False)
class _Job:
    lane: str
    item: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the caller's loop has closed; nobody is listening
            pass


@dataclass
class BatchStats:
    """Counters that show batching at work (``peak_batch_size > 1`` under concurrency)."""

    batches: int = 0
    items: int = 0
    peak_batch_size: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class Batcher:
    """Batches calls per lane on one daemon thread. Create, `start`, `await run(...)`, `close`."""

    _ids = itertools.count()

    def __init__(
        self, lanes: dict[str, BatchFn], *, max_batch_size: int = 32, max_wait_s: float = 0.002
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.lanes = dict(lanes)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self.failure = ""
        self._queues: dict[str, deque[_Job]] = {lane: deque() for lane in self.lanes}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(
            target=self._main, name=f"sax-batcher-{next(self._ids)}", daemon=True
        )

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def dead_reason(self) -> str | None:
        """Why the thread can no longer serve, or None while healthy or after `close`."""
        if self.failure:
            return self._stopped_reason()
        if self._thread.ident is not None and not self._thread.is_alive() and not self._closing:
            return "the model's device thread exited"
        return None

    async def run(self, lane: str, item: Any) -> Any:
        """The lane's output for `item`, computed in a batch with other waiting items."""
        if lane not in self._queues:
            raise SaxError(Code.INTERNAL, f"no batch lane {lane!r}")
        loop = asyncio.get_running_loop()
        job = _Job(lane, item, loop, loop.create_future())
        with self._cond:
            if not self.alive:
                raise unavailable(self._stopped_reason())
            self._queues[lane].append(job)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                if job in self._queues[lane]:
                    self._queues[lane].remove(job)
            raise

    async def close(self) -> None:
        """Stops the thread after its current batch; queued callers get UNAVAILABLE."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        self._fail_queued(unavailable(self._stopped_reason()))

    # ------------------------------------------------------------ the device thread

    def _stopped_reason(self) -> str:
        if self.failure:
            return f"the model's device thread died: {self.failure}"
        return "the model is shutting down"

    def _fail_queued(self, error: SaxError) -> None:
        with self._cond:
            jobs = [j for q in self._queues.values() for j in q]
            for q in self._queues.values():
                q.clear()
        for job in jobs:
            job.settle(error=error)

    def _next_batch(self) -> tuple[str, list[_Job]] | None:
        """Blocks until a batch is due (or closing); takes it off its queue."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                heads = [(q[0].enqueued, lane) for lane, q in self._queues.items() if q]
                if not heads:
                    self._cond.wait()
                    continue
                oldest, lane = min(heads)
                queue = self._queues[lane]
                wait = oldest + self.max_wait_s - time.monotonic()
                if len(queue) >= self.max_batch_size or wait <= 0:
                    n = min(len(queue), self.max_batch_size)
                    return lane, [queue.popleft() for _ in range(n)]
                self._cond.wait(wait)

    def _main(self) -> None:
        try:
            while (due := self._next_batch()) is not None:
                self._run_batch(*due)
        except BaseException as exc:  # the thread itself failed: nothing can be served
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            log.exception("Batcher thread died")
            with self._cond:
                self._closing = True
            self._fail_queued(unavailable(self._stopped_reason()))

    def _run_batch(self, lane: str, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.cancelled()]
        if not jobs:
            return
        self.stats.batches += 1
        self.stats.items += len(jobs)
        self.stats.peak_batch_size = max(self.stats.peak_batch_size, len(jobs))
        try:
            outputs = list(self.lanes[lane]([j.item for j in jobs]))
            if len(outputs) != len(jobs):
                raise SaxError(
                    Code.INTERNAL, f"lane {lane} returned {len(outputs)} outputs for {len(jobs)}"
                )
        except SaxError as exc:
            for job in jobs:
                job.settle(error=exc)
            return
        except Exception as exc:
            error = internal(exc, f"batch of {len(jobs)} on lane {lane}", log)
            for job in jobs:
                job.settle(error=error)
            return
        except BaseException as exc:  # the thread dies: its callers must not wait forever
            self.failure = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._closing = True
            for job in jobs:
                job.settle(error=unavailable(self._stopped_reason()))
            raise
        for job, output in zip(jobs, outputs, strict=True):
            job.settle(result=output)
