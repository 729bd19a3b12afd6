"""Plumbing for the model server tests: options, assignments, an in-process uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sax.schemas import Assignment
from sax.server.main import uvicorn_server
from sax.server.manager import ModelServer
from sax.server.options import ServerOptions
from tests.helpers import free_port

ECHO = "sax.models.test.Echo"
CELL = "/sax/test"


def options(**kw: Any) -> ServerOptions:
    kw.setdefault("sax_root", "memory://sax-server-tests")
    return ServerOptions(cell=CELL, port=free_port(), **kw)


def assign(
    name: str,
    path: str = ECHO,
    *,
    overrides: dict[str, Any] | None = None,
    acls: dict[str, str] | None = None,
    uuid: str = "u1",
    checkpoint: str = "None",
) -> Assignment:
    return Assignment(
        model_id=f"{CELL}/{name}",
        model_path=path,
        checkpoint_path=checkpoint,
        overrides=overrides or {},
        acls=acls or {},
        uuid=uuid,
    )


@contextlib.asynccontextmanager
async def serving(server: ModelServer) -> AsyncIterator[str]:
    """Runs `server`'s app on uvicorn (127.0.0.1, the options' port); yields its base URL."""
    http = uvicorn_server(server, graceful_s=1)
    task = asyncio.create_task(http.serve())
    while not http.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.opts.port}"
    finally:
        http.should_exit = True
        await task
        await server.shutdown()


@contextlib.asynccontextmanager
async def echo_server(
    *assignments: Assignment, **opts: Any
) -> AsyncIterator[tuple[ModelServer, str]]:
    """A ModelServer holding `assignments` (loaded), served over HTTP."""
    server = ModelServer(options(**opts))
    await server.apply(assignments)
    await server.settle(10)
    async with serving(server) as url:
        yield server, url
