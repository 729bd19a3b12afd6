"""A cell of real processes on loopback, for end-to-end tests and the control-plane bench.

`RealCell` runs ``sax admin-config``, one ``sax admin-server`` and any number of
``sax model-server --backends=test`` processes, each logging to a file under a temp dir, and
kills them all on `stop`. `LocationLog` is a WatchLoc watcher built on the client's own loop
(`sax.client.locations.watch_forever`) that keeps every ready-address set it received with the
time it arrived, so a test can say "the watcher saw the new address within N seconds".
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

import sax.client
from sax.client.admin import AdminClient
from sax.client.locations import ReplicaSet, watch_forever
from sax.naming import ModelId
from sax.schemas import ModelInfo, ServerList, WatchResult
from tests.helpers import SAX, SAXUTIL, Proc, free_port, wait_http

CELL = "/sax/test"
ECHO = "sax.models.test.Echo"


class RealCell:
    """One admin process (flags `admin_flags`) for `cell` on `sax_root` (default: a dir in `tmp`).

    `fs_root` defaults to ``<sax_root>/fs``. Processes inherit this process's environment, so a
    GCS emulator set up in ``os.environ`` (tests/gcs.py) reaches them too."""

    def __init__(
        self,
        tmp: Path,
        *,
        sax_root: str | None = None,
        fs_root: str | None = None,
        cell: str = CELL,
        admin_flags: Sequence[str] = (),
    ) -> None:
        self.tmp = tmp
        self.cell = cell
        self.sax_root = sax_root or str(tmp / "root")
        self.fs_root = fs_root or f"{self.sax_root}/fs"
        self.procs: list[Proc] = []
        subprocess.run(
            [
                SAX,
                "admin-config",
                f"--sax_cell={cell}",
                f"--sax_root={self.sax_root}",
                f"--fs_root={self.fs_root}",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        self.admin_address = f"127.0.0.1:{port}"
        self.admin = self.start(["admin-server", f"--port={port}", *admin_flags], "admin")
        try:
            wait_http(f"http://{self.admin_address}/healthz")
        except BaseException:
            self.stop()
            raise

    def start(self, args: Sequence[str], name: str, env: dict[str, str] | None = None) -> Proc:
        """Starts ``sax <args>`` for this cell, logging to ``<tmp>/<name>.log``."""
        proc = Proc(
            [SAX, *args, f"--sax_cell={self.cell}", f"--sax_root={self.sax_root}"],
            self.tmp / f"{name}.log",
            env=env,
        )
        self.procs.append(proc)
        return proc

    def model_servers(
        self,
        n: int,
        ports: Sequence[int] = (),
        flags: Sequence[str] = ("--backends=test",),
        env: dict[str, str] | None = None,
    ) -> list[tuple[Proc, str]]:
        """Starts `n` model servers side by side (on `ports` when given, with `flags`); returns
        each with its address once all answer /healthz."""
        ports = list(ports) or [free_port() for _ in range(n)]
        started = [
            (
                self.start(
                    ["model-server", f"--port={port}", *flags],
                    f"ms{port}-{len(self.procs)}",  # a restart on the same port logs apart
                    env,
                ),
                f"127.0.0.1:{port}",
            )
            for port in ports
        ]
        for _, address in started:  # a server imports its engines before it listens
            wait_http(f"http://{address}/healthz", timeout_s=180)
        return started

    def model_server(
        self,
        port: int | None = None,
        flags: Sequence[str] = ("--backends=test",),
        env: dict[str, str] | None = None,
    ) -> tuple[Proc, str]:
        return self.model_servers(1, [port] if port else [], flags, env)[0]

    def saxutil(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SAXUTIL, f"--sax_root={self.sax_root}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def model(self, name: str) -> ModelInfo:
        """The admin's view of one model (GET /v1/models/{name})."""
        reply = httpx.get(f"http://{self.admin_address}/v1/models/{name}", timeout=10)
        reply.raise_for_status()
        return ModelInfo.model_validate(reply.json())

    def loaded(self, name: str) -> list[str]:
        """Data addresses of `name`'s LOADED replicas, as the admin reports them."""
        return sorted(r.address for r in self.model(name).replicas if r.status == "LOADED")

    def servers(self) -> ServerList:
        reply = httpx.get(f"http://{self.admin_address}/v1/servers", timeout=10)
        reply.raise_for_status()
        return ServerList.model_validate(reply.json())

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def __enter__(self) -> RealCell:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops the client's background watchers, then every process."""
        sax.client.close()
        self.stop()


class LocationLog:
    """A WatchLoc watcher on `model_id` that records every address set it got, with its time."""

    def __init__(self, sax_root: str, model_id: str) -> None:
        model = ModelId.parse(model_id)
        self.history: list[tuple[float, tuple[str, ...]]] = []
        self._replicas = ReplicaSet()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=watch_forever,
            args=(AdminClient(sax_root, model.cell_id), model, self._on_result, self._stop),
            name=f"location-log{model}",
            daemon=True,
        )
        self._thread.start()

    def _on_result(self, result: WatchResult) -> None:
        self._replicas.apply(result)
        with self._changed:
            self.history.append((time.monotonic(), self._replicas.addresses))
            self._changed.notify_all()

    def wait(
        self,
        pred: Callable[[tuple[str, ...]], bool],
        *,
        since: float = 0.0,
        timeout_s: float = 10.0,
    ) -> float:
        """The arrival time of the first set received at or after `since` that satisfies
        `pred`, waiting up to `timeout_s` for it; TimeoutError (with the history) otherwise."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        with self._changed:
            while True:
                for at, addresses in self.history[checked:]:
                    if at >= since and pred(addresses):
                        return at
                checked = len(self.history)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching address set in {timeout_s}s: {self.history}")
                self._changed.wait(remaining)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The latest set received (empty before the first)."""
        with self._changed:
            return self.history[-1][1] if self.history else ()

    def sets_since(self, since: float) -> list[tuple[str, ...]]:
        with self._changed:
            return [addresses for at, addresses in self.history if at >= since]

    def stop(self) -> None:
        self._stop.set()
