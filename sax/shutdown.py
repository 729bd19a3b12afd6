"""Graceful stop for sax's server processes: SIGTERM/SIGINT become an `asyncio.Event`.

uvicorn's own signal handling re-raises the signal once its server returns, which kills the
process before the caller can hand a lease back, drain requests or stop engine processes. So
`QuietServer` never touches signals, and `stop_on_signals` routes both signals to an event the
process's `serve` coroutine waits on; it then stops things in its own order and returns, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling; `on_started` runs once it accepts connections."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.started_event = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.started_event.set()
            if self._on_started is not None:
                self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Sets `stop` on SIGTERM or SIGINT while the block runs (main thread only; elsewhere the
    embedding caller stops the server itself)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def until(stop: asyncio.Event, work: asyncio.Future[None]) -> bool:
    """Waits for `work` or `stop`; True when `work` finished first."""
    stopper: asyncio.Future[None] = asyncio.ensure_future(_wait(stop))
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    return work.done()


async def _wait(event: asyncio.Event) -> None:
    await event.wait()
