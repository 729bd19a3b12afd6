"""The blocking client's event loop: a private asyncio loop on a daemon thread.

The client is written once, for asyncio; its blocking face (`sax.client.faces`) runs each call
as a task of a `Portal`'s loop and waits for the result on the caller's thread. So a blocking
client works from any number of threads at once, and beside an event loop the caller already
runs (it never touches the caller's loop).

A portal starts its thread on first use. `Portal.close` (or dropping the last reference to the
portal, or process exit) cancels its tasks (WatchLoc watchers among them), closes its HTTP
connections and joins the thread; a closed portal starts a new one on its next call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from sax.client import http
from sax.errors import Code, SaxError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CLOSE_TIMEOUT_S = 10.0  # a watcher's cancelled long poll and a location.json read in a thread

_open: weakref.WeakSet[Portal] = weakref.WeakSet()
_open_lock = threading.Lock()


class Portal:
    """A loop thread that runs coroutines for blocking callers; thread-safe."""

    def __init__(self, name: str = "sax-client") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Portal] | None = None

    @property
    def running(self) -> bool:
        """Whether its thread is started (and not closed)."""
        return self._loop is not None

    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Schedules ``fn(*args, **kwargs)`` on the loop (starting it if needed)."""
        with self._lock:  # so that `close` cancels every task scheduled before it
            if self._loop is None:
                self._start()
            assert self._loop is not None
            if threading.current_thread() is self._thread:
                raise RuntimeError("a blocking sax client call from its own event loop")
            return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)

    def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs ``fn(*args, **kwargs)`` on the loop and returns its result or raises its error;
        SaxError CANCELLED if the portal is closed meanwhile."""
        return self.result(self.submit(fn, *args, **kwargs))

    def result(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """`future`'s result, waiting up to `timeout` (TimeoutError after it, the task going on).
        An interrupt of the wait (KeyboardInterrupt) cancels the task."""
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            raise SaxError(Code.CANCELLED, f"{self.name} was closed during the call") from None
        except TimeoutError:
            raise
        except BaseException:
            future.cancel()  # no-op when the task itself raised
            raise

    def close(self) -> None:
        """Cancels the loop's tasks, closes its connections and joins its thread."""
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._loop = self._thread = None
            if finalizer is None:
                return
            detached = finalizer.detach()
            if detached is None:
                return
            _, _, (loop, thread), _ = detached
            _schedule_stop(loop)
        _join(thread)

    def __repr__(self) -> str:
        return f"Portal({self.name!r}, running={self.running})"

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run, args=(loop,), name=self.name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        # Runs when the portal is dropped unclosed, and at process exit: no thread outlives it.
        self._finalizer = weakref.finalize(self, _stop, loop, thread)
        with _open_lock:
            _open.add(self)


def close() -> None:
    """Closes every portal of the process: the blocking clients' watchers, connections and loop
    threads. Each starts again on its next call."""
    with _open_lock:
        portals = list(_open)
    for portal in portals:
        portal.close()


def _run(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _shutdown() -> None:
    """On the loop: cancels every other task, closes the loop's HTTP client, then stops."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close_async_client()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
    loop.stop()


def _schedule_stop(loop: asyncio.AbstractEventLoop) -> None:
    shutdown = _shutdown()
    try:
        asyncio.run_coroutine_threadsafe(shutdown, loop)
    except RuntimeError:  # the loop is closed already
        shutdown.close()


def _join(thread: threading.Thread) -> None:
    if thread is threading.current_thread():
        return  # dropped on its own loop: it stops once the shutdown task has run
    thread.join(CLOSE_TIMEOUT_S)
    if thread.is_alive():
        log.warning("%s did not stop within %.0f s", thread.name, CLOSE_TIMEOUT_S)


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    _schedule_stop(loop)
    _join(thread)
