"""`serve(opts)`: one model server process (HTTP data API + join loop) until SIGTERM or SIGINT.

Start-up: the enabled backends are imported and their process environment set on the main thread
before anything else runs (`ModelServer.prepare_backends`); a backend that fails is reported, not
fatal. uvicorn serves the app with access logs off; the join loop starts once the socket listens,
so the admin never assigns replicas to an address that refuses connections.

Stop, on SIGTERM or SIGINT, in this order:
1. the join loop stops and a last join marked ``draining`` tells the admin this server is
   leaving: the admin drops it at once, so clients stop being routed here and its replicas are
   re-placed while the port is still open;
2. requests in flight finish, for at most ``drain_timeout_s``;
3. every model is unloaded (each bounded by ``unload_timeout_s``) while HTTP still answers, so a
   request the drain did not see finish gets a retryable 503; then the HTTP server closes and
   any child process still alive is killed, so no engine process outlives the server;
4. `serve` returns and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from sax.auth.source import AuthSource
from sax.auth.startup import startup_auth
from sax.errors import SaxError
from sax.model_app import create_app
from sax.naming import CellId
from sax.server.join_loop import JoinLoop
from sax.server.manager import ModelServer
from sax.server.options import ServerOptions
from sax.shutdown import QuietServer, stop_on_signals, until
from sax.store import CellStore

log = logging.getLogger(__name__)

# Telling the admin this server leaves; generous because a host that stops a server is often
# busy (engines finishing in-flight requests), and the leave is what moves clients away at once.
LEAVE_TIMEOUT_S = 15.0


def uvicorn_server(
    server: ModelServer, *, graceful_s: int = 5, auth: AuthSource | None = None
) -> QuietServer:
    config = uvicorn.Config(
        create_app(server, auth),
        host=server.opts.host,
        port=server.opts.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_s,
    )
    return QuietServer(config)


async def _join_when_listening(http: QuietServer, join: JoinLoop) -> None:
    await http.started_event.wait()
    log.info(
        "Model server %s serving on %s:%d", join.server.address, http.config.host, http.config.port
    )
    await join.run()


async def serve(opts: ServerOptions) -> None:
    try:
        store = CellStore(opts.sax_root, CellId.parse(opts.cell))
        auth = await asyncio.to_thread(
            startup_auth, "model server", store, opts.host, insecure=opts.insecure, token=opts.token
        )
    except SaxError as exc:
        log.error("Cannot start the model server: %s", exc.message)
        raise SystemExit(2) from exc
    server = ModelServer(opts)
    server.prepare_backends()
    http = uvicorn_server(server, auth=auth)
    join = JoinLoop(server)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        serving: asyncio.Future[None] = asyncio.ensure_future(http.serve())
        join_task = asyncio.create_task(_join_when_listening(http, join))

        def _stop_if_failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("The join loop failed; stopping", exc_info=task.exception())
                stop.set()

        join_task.add_done_callback(_stop_if_failed)
        if await until(stop, serving):
            log.error("The HTTP server stopped on its own; shutting down")
        else:
            log.info("Stopping: leaving the cell, draining requests, unloading models")
        await shut_down(server, http, serving, join, join_task)


async def shut_down(
    server: ModelServer,
    http: uvicorn.Server,
    serving: asyncio.Future[None],
    join: JoinLoop,
    join_task: asyncio.Task[None],
) -> None:
    """The stop sequence of the module docstring; every step is bounded."""
    join_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await join_task
    if http.started and not serving.done():
        await join.leave(LEAVE_TIMEOUT_S)
        if not await server.drain(server.opts.drain_timeout_s):
            log.warning(
                "%d requests still in flight after %.0f s; stopping anyway",
                server.inflight(),
                server.opts.drain_timeout_s,
            )
    # Unload while HTTP still serves: a request the drain did not see finish gets the engine's
    # retryable 503 ("the model was unloaded") and its client retries elsewhere, where a request
    # cut by a closing server would get a 500 or a reset.
    await server.shutdown()
    http.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(serving, (http.config.timeout_graceful_shutdown or 5) + 5)
    await asyncio.to_thread(kill_children)
    log.info("Model server stopped")


def kill_children(grace_s: float = 1.0) -> None:
    """Terminates (then kills) every descendant process still alive once the engines were
    unloaded: engine processes whose unload was abandoned, and helpers such as multiprocessing's
    resource tracker, must not outlive the server."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            log.info("Killing leftover child process %d (%s)", child.pid, child.name())
            child.kill()
    # A killed process holding GBs can take seconds to free its memory (and vanish).
    psutil.wait_procs(alive, timeout=10 * grace_s)
