"""Shared test plumbing: free loopback ports, waiting for HTTP, serving an app in the test's
event loop, spawning sax processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psutil
import uvicorn
from starlette.types import ASGIApp

REPO = Path(__file__).resolve().parent.parent
SAX = str(Path(sys.executable).parent / "sax")
SAXUTIL = str(Path(sys.executable).parent / "saxutil")


def running(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    """The processes among `procs` that are still running and not zombies; one that exits while
    it is being inspected counts as gone."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving_app(app: ASGIApp) -> AsyncIterator[str]:
    """`app` on a real uvicorn at 127.0.0.1:<free port> in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def wait_http(url: str, timeout_s: float = 30.0) -> httpx.Response:
    """Polls `url` until it answers 2xx; raises TimeoutError with the last failure."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2.0)
            if r.is_success:
                return r
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout_s}s: {last}")


class Proc:
    """A sax process whose output goes to a log file, killed at teardown."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.p = subprocess.Popen(
            list(args),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.p.wait(timeout=10)
        self._fh.close()


def wait_for(pred, timeout_s: float = 10.0, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Polls `pred()` until truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("condition not met in time")
