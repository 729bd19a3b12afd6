"""The join loop against the real admin app (sax.admin_app over sax.admin.cell.Cell) on
loopback: assignment applied, status changes sent at once, and a new leader followed through
location.json."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from sax.admin.cell import Cell
from sax.admin_app import create_app
from sax.errors import Code, SaxError
from sax.naming import CellId
from sax.schemas import (
    CellConfig,
    CellState,
    JoinRequest,
    JoinResponse,
    Location,
    PublishRequest,
)
from sax.server.join_loop import JoinLoop
from sax.server.manager import ModelServer
from sax.store import CellStore
from tests.helpers import free_port
from tests.server.harness import CELL, ECHO, options


async def _no_persist(_: CellState) -> None:
    return None


class Admin:
    """A real admin app (without the leader lease) on a loopback port."""

    def __init__(self, admin_id: str) -> None:
        self.cell = Cell(CellId.parse(CELL), admin_id, _no_persist, join_poll_timeout_s=5.0)
        self.address = f"127.0.0.1:{free_port()}"
        config = uvicorn.Config(
            create_app(self.cell),
            host="127.0.0.1",
            port=int(self.address.rsplit(":", 1)[1]),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.http = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Admin:
        self.task = asyncio.create_task(self.http.serve())
        while not self.http.started:  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self.http.should_exit = True
        if self.task is not None:
            await self.task


def point_at(store: CellStore, admin: Admin) -> None:
    _, gen = store.read_location()
    store.write_location(Location(address=admin.address, admin_id=admin.cell.admin_id), gen)


async def test_join_applies_assignments_and_follows_a_new_leader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sax.server.join_loop")
    root = str(tmp_path / "root")
    store = CellStore(root, CellId.parse(CELL))
    store.create(CellConfig(fs_root=str(tmp_path / "fs")))
    server = ModelServer(options(sax_root=root, tags=("t1",)))
    a = await Admin("admin-a").start()
    b = Admin("admin-b")
    point_at(store, a)
    await a.cell.publish(
        PublishRequest(
            model_id=f"{CELL}/m",
            model_path=ECHO,
            checkpoint_path="None",
            num_replicas=1,
            overrides={"load_delay_s": 0.3},
        )
    )
    loop = asyncio.create_task(JoinLoop(server).run())
    try:
        await server.wait_until(lambda: server.version > 0, 5)  # assignment received
        start = time.monotonic()
        # LOADING is reported, and the admin then holds that join for its 5 s poll; LOADED
        # arrives well before that only because the loop re-joins as soon as a status changes.
        assert (await a.cell.wait("m", 1, timeout_s=5)).ready_replicas == 1
        assert time.monotonic() - start < 2.0
        assert (server.admin_address, server.admin_id) == (a.address, "admin-a")
        (info,) = (await a.cell.servers()).servers
        assert info.address == server.address and info.tags == ["t1"]
        assert ECHO in info.model_paths

        # A new leader writes its location and the old one goes away: the loop follows, and
        # B's (empty) assignment unloads m.
        await b.start()
        point_at(store, b)
        switched = time.monotonic()
        await a.stop()
        await server.wait_until(lambda: server.admin_id == "admin-b" and not server.reports(), 10)
        assert time.monotonic() - switched < 4.0
        assert server.admin_address == b.address
        assert [s.address for s in (await b.cell.servers()).servers] == [server.address]
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await server.shutdown()
        await a.stop()
        await b.stop()
    joined = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Joined")]
    assert joined == [f"Joined {a.address}", f"Joined {b.address}"]


async def test_join_retries_a_503_and_paces_an_admin_that_never_holds(tmp_path: Path) -> None:
    """A test double of the join route: two 503s (a standby), then instant identical replies."""
    seen: list[JoinRequest] = []
    app = FastAPI()

    @app.post("/v1/servers:join")
    async def join(body: JoinRequest) -> Response:
        seen.append(body)
        if len(seen) <= 2:
            return JSONResponse(SaxError(Code.UNAVAILABLE, "standby").to_body(), status_code=503)
        return JSONResponse(JoinResponse(admin_id="quick").model_dump())

    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(http.serve())
    root = str(tmp_path / "root")
    store = CellStore(root, CellId.parse(CELL))
    store.create(CellConfig(fs_root=str(tmp_path / "fs")))
    _, gen = store.read_location()
    store.write_location(Location(address=f"127.0.0.1:{port}", admin_id="quick"), gen)
    server = ModelServer(options(sax_root=root))
    loop = asyncio.create_task(JoinLoop(server).run())
    try:
        await asyncio.sleep(1.5)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        http.should_exit = True
        await serving
    assert server.admin_id == "quick"
    assert seen[-1].admin_id == "quick" and seen[0].admin_id == ""
    assert 4 <= len(seen) <= 10, len(seen)  # unpaced, it would be hundreds
    # One incarnation, numbered in order, retries included: the admin can tell a late one.
    assert len({r.incarnation for r in seen}) == 1 and seen[0].incarnation
    assert [r.seq for r in seen] == list(range(1, len(seen) + 1))
