"""`serve(opts)`: one model server process (HTTP data API + join loop) until a signal stops it.

uvicorn serves the app with access logs off and its own logs at warning (the data path logs
nothing per request). The join loop starts once the socket listens, so the admin never assigns
replicas to an address that refuses connections. On SIGINT/SIGTERM uvicorn drains, the join loop
stops (its closed long poll tells the admin at once) and every model is unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from sax.model_app import create_app
from sax.server.join_loop import JoinLoop
from sax.server.manager import ModelServer
from sax.server.options import ServerOptions

log = logging.getLogger(__name__)


def uvicorn_server(server: ModelServer, *, graceful_s: int = 5) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(server),
        host=server.opts.host,
        port=server.opts.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_s,
    )
    return uvicorn.Server(config)


async def _join_when_listening(http: uvicorn.Server, join: JoinLoop) -> None:
    while not http.started:
        if http.should_exit:
            return
        await asyncio.sleep(0.02)
    log.info(
        "Model server %s serving on %s:%d", join.server.address, http.config.host, http.config.port
    )
    await join.run()


async def serve(opts: ServerOptions) -> None:
    server = ModelServer(opts)
    http = uvicorn_server(server)
    join = JoinLoop(server)
    join_task = asyncio.create_task(_join_when_listening(http, join))

    def _stop_if_failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("The join loop failed; stopping", exc_info=task.exception())
            http.should_exit = True

    join_task.add_done_callback(_stop_if_failed)
    try:
        await http.serve()
    finally:
        join_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await join_task
        await server.shutdown()
