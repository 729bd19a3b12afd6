"""Test doubles of the admin and model-server HTTP contracts, served by real uvicorn servers on
loopback ports, so the client's own discovery, retry and failover logic runs over real HTTP.

They implement only the routes the client calls, with knobs (`mode`) to make a replica fail in
the ways the client must survive: 503, 404 (not loaded here), errors before or after the first
streamed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

import sax.client
from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import CellConfig, Location, ModelInfo, ReplicaInfo
from sax.store import CellStore
from tests.helpers import free_port


def error(code: Code, message: str) -> JSONResponse:
    err = SaxError(code, message)
    return JSONResponse(err.to_body(), status_code=err.http_status)


class ServerThread:
    """A uvicorn server on 127.0.0.1 in a daemon thread; `stop` closes it (connections drop)."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {self.address} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(timeout=10)


class FakeAdmin:
    """The admin API of one cell: models, WatchLoc with a changelog, :wait, stats, servers."""

    def __init__(self, cell: str = "test", hold_s: float = 1.0) -> None:
        self.cell = cell
        self.admin_id = uuid.uuid4().hex
        self.hold_s = hold_s
        self.unavailable = False  # answer 503 to everything (a deposed leader)
        self.models: dict[str, ModelInfo] = {}
        self.log: dict[str, list[tuple[str, str]]] = {}  # name -> [(op, address)], seqno = index
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.app = self._build()

    # -- test controls (any thread)

    def add_model(self, name: str, addresses: list[str] | None = None) -> None:
        with self._lock:
            self.models[name] = ModelInfo(
                model_id=f"/sax/{self.cell}/{name}",
                model_path="sax.models.test.Echo",
                checkpoint_path="None",
                num_replicas=len(addresses or []),
            )
            self.log[name] = [("add", a) for a in addresses or []]
            self._refresh(name)

    def add_replica(self, name: str, address: str) -> None:
        with self._lock:
            self.log[name].append(("add", address))
            self._refresh(name)

    def remove_replica(self, name: str, address: str) -> None:
        with self._lock:
            self.log[name].append(("del", address))
            self._refresh(name)

    def addresses(self, name: str) -> list[str]:
        current: set[str] = set()
        for op, address in self.log[name]:
            (current.add if op == "add" else current.discard)(address)
        return sorted(current)

    def _refresh(self, name: str) -> None:
        info = self.models[name]
        replicas = [ReplicaInfo(address=a, server=a, status="LOADED") for a in self.addresses(name)]
        self.models[name] = info.model_copy(
            update={"replicas": replicas, "ready_replicas": len(replicas)}
        )

    # -- routes

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            self.requests.append(f"{request.method} {request.url.path}")
            if self.unavailable:
                return error(Code.UNAVAILABLE, "not the leader")
            return await call_next(request)

        @app.post("/v1/models")
        async def publish(body: dict[str, Any]) -> Response:
            name = body["model_id"].rsplit("/", 1)[-1]
            if name in self.models:
                return error(Code.ALREADY_EXISTS, f"model {body['model_id']} already exists")
            with self._lock:
                self.models[name] = ModelInfo(
                    model_id=body["model_id"],
                    model_path=body["model_path"],
                    checkpoint_path=body["checkpoint_path"],
                    num_replicas=body["num_replicas"],
                    overrides=body.get("overrides", {}),
                )
                self.log[name] = []
            return JSONResponse(self.models[name].model_dump(mode="json"))

        @app.get("/v1/models")
        async def list_all() -> Response:
            return JSONResponse(
                {"models": [m.model_dump(mode="json") for m in self.models.values()]}
            )

        @app.get("/v1/models/{name}")
        async def get(name: str) -> Response:
            if name not in self.models:
                return error(Code.NOT_FOUND, f"model /sax/{self.cell}/{name} not found")
            return JSONResponse(self.models[name].model_dump(mode="json"))

        @app.patch("/v1/models/{name}")
        async def update(name: str, body: dict[str, Any]) -> Response:
            if name not in self.models:
                return error(Code.NOT_FOUND, f"model /sax/{self.cell}/{name} not found")
            with self._lock:
                self.models[name] = self.models[name].model_copy(update=body)
            return JSONResponse(self.models[name].model_dump(mode="json"))

        @app.delete("/v1/models/{name}")
        async def delete(name: str) -> Response:
            if self.models.pop(name, None) is None:
                return error(Code.NOT_FOUND, f"model /sax/{self.cell}/{name} not found")
            return JSONResponse({})

        @app.post("/v1/models/{name}:wait")
        async def wait(name: str, body: dict[str, Any]) -> Response:
            deadline = time.monotonic() + body.get("timeout_s", 30)
            while time.monotonic() < deadline:
                if name not in self.models:
                    return error(Code.NOT_FOUND, f"model {name} not found")
                ready = self.models[name].ready_replicas
                if ready >= body.get("num_replicas", 1):
                    return JSONResponse({"ready_replicas": ready})
                await asyncio.sleep(0.02)
            return error(Code.DEADLINE_EXCEEDED, "not ready in time")

        @app.get("/v1/models/{name}/locations")
        async def locations(name: str, admin_id: str = "", seqno: int = 0) -> Response:
            deadline = time.monotonic() + self.hold_s
            full = admin_id != self.admin_id or seqno == 0
            while True:
                if name not in self.models:
                    return error(Code.NOT_FOUND, f"model /sax/{self.cell}/{name} not found")
                log = self.log[name]
                if full:
                    return JSONResponse(
                        {
                            "admin_id": self.admin_id,
                            "next_seqno": len(log),
                            "has_fullset": True,
                            "values": self.addresses(name),
                        }
                    )
                if seqno < len(log) or time.monotonic() >= deadline:
                    changes = [{"op": op, "address": a} for op, a in log[seqno:]]
                    return JSONResponse(
                        {
                            "admin_id": self.admin_id,
                            "next_seqno": max(seqno, len(log)),
                            "changelog": changes,
                        }
                    )
                await asyncio.sleep(0.02)

        @app.get("/v1/stats")
        async def stats() -> Response:
            return JSONResponse(
                {
                    "server_types": [{"chip": "cpu", "topology": "1", "num_servers": 2}],
                    "servers_by_model_path": {"sax.models.test.Echo": 2},
                    "num_servers": 2,
                    "num_models": len(self.models),
                }
            )

        @app.get("/v1/servers")
        async def servers() -> Response:
            return JSONResponse({"servers": []})

        return app


class FakeModelServer:
    """The data API for any model name. `mode`: "ok", "unavailable" (503), "not_found" (404),
    "stream_error_first" (stream fails before its first event), "stream_error_mid" (after it)."""

    def __init__(self, reply_delay_s: float = 0.0) -> None:
        self.mode = "ok"
        self.reply_delay_s = reply_delay_s
        self.served = 0
        self.app = self._build()

    def _fail(self) -> Response | None:
        if self.mode == "unavailable":
            return error(Code.UNAVAILABLE, "overloaded")
        if self.mode == "not_found":
            return error(Code.NOT_FOUND, "model is not loaded here")
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/models/{name}/lm.generate")
        async def generate(name: str, body: dict[str, Any]) -> Response:
            if (failed := self._fail()) is not None:
                return failed
            if body["text"] == "bad-input":
                return error(Code.INVALID_ARGUMENT, "bad input")
            if self.reply_delay_s:
                await asyncio.sleep(self.reply_delay_s)
            self.served += 1
            n = int(body.get("extra_inputs", {}).get("num_samples", 1))
            samples = [
                {
                    "text": body["text"],
                    "score": -0.5 * i + 0.0,
                    "num_tokens": 1,
                    "finish_reason": "stop",
                }
                for i in range(n)
            ]
            return JSONResponse({"samples": samples})

        @app.post("/v1/models/{name}/lm.generate_stream")
        async def generate_stream(name: str, body: dict[str, Any]) -> Response:
            if (failed := self._fail()) is not None:
                return failed
            words = body["text"].split(" ")
            mode = self.mode

            async def events() -> AsyncIterator[bytes]:
                if mode == "stream_error_first":
                    yield sse("error", SaxError(Code.UNAVAILABLE, "engine died").to_body())
                    return
                done = ""
                for i, word in enumerate(words):
                    piece = word if not done else " " + word
                    chunk = {
                        "items": [
                            {"index": 0, "text": piece, "prefix_len": len(done), "score": 0.0}
                        ]
                    }
                    yield sse("chunk", chunk)
                    done += piece
                    if mode == "stream_error_mid" and i == 0:
                        yield sse("error", SaxError(Code.UNAVAILABLE, "engine died").to_body())
                        return
                self.served += 1
                yield sse("done", {"samples": [{"text": done, "score": -1.25}]})

            return StreamingResponse(events(), media_type="text/event-stream")

        @app.post("/v1/models/{name}/lm.score")
        async def score(name: str, body: dict[str, Any]) -> Response:
            if (failed := self._fail()) is not None:
                return failed
            self.served += 1
            return JSONResponse({"scores": [-float(len(s)) for s in body["suffixes"]]})

        @app.post("/v1/models/{name}/lm.embed")
        async def embed(name: str, body: dict[str, Any]) -> Response:
            if (failed := self._fail()) is not None:
                return failed
            self.served += 1
            return JSONResponse({"embedding": [0.5, 0.25, float(len(body["text"]))]})

        @app.post("/v1/models/{name}/lm.gradient")
        async def gradient(name: str, body: dict[str, Any]) -> Response:
            if (failed := self._fail()) is not None:
                return failed
            self.served += 1
            values = [float(i) for i in range(10)]
            return JSONResponse(
                {"score": [-2.0], "gradients": {"w": {"shape": [10], "values": values}}}
            )

        @app.post("/v1/models/{name}/vm.classify")
        async def classify(name: str, body: dict[str, Any]) -> Response:
            return error(Code.UNIMPLEMENTED, f"model {name} does not serve vm.classify")

        return app


def sse(event: str, payload: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """The address of a listener whose accept queue is full, so the kernel drops new SYNs: a
    connect there hangs until its timeout (``ConnectTimeout``), as to a host that went dark."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: a queue of one
        port = listener.getsockname()[1]
        for _ in range(8):
            probe = stack.enter_context(socket.socket())
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the kernel accepted every connect: no way to make one hang here")
        yield f"127.0.0.1:{port}"


def point_cell_at(sax_root: Path, address: str, cell: str = "test") -> None:
    """Creates the cell if needed and writes `address` as its leader in location.json."""
    store = CellStore(str(sax_root), CellId(cell))
    if not store.exists():
        store.create(CellConfig(fs_root=str(sax_root / "fs")), exist_ok=True)
    _, generation = store.read_location()
    store.write_location(
        Location(address=address, admin_id="fake", lease_expires_at=time.time() + 3600),
        generation,
    )


@dataclass
class FakeCell:
    sax_root: str
    admin: FakeAdmin
    admin_server: ServerThread
    replicas: list[FakeModelServer]
    replica_servers: list[ServerThread]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.replica_servers]


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[FakeCell]:
    """A fake admin (found through a real location.json) and two fake replicas of /sax/test/m."""
    admin = FakeAdmin()
    admin_server = ServerThread(admin.app)
    point_cell_at(tmp_path, admin_server.address)
    replicas = [FakeModelServer(), FakeModelServer()]
    servers = [ServerThread(r.app) for r in replicas]
    admin.add_model("m", [s.address for s in servers])
    yield FakeCell(str(tmp_path), admin, admin_server, replicas, servers)
    sax.client.close()
    for server in [*servers, admin_server]:
        server.stop()
