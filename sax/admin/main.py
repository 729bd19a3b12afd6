"""The admin server process: one leader per cell, everything else waits.

Startup: validate the cell, read config.json (it names fs_root), wait for the leader lease
(sax.admin.lease) as a standby, and only then restore state.json, bind the port and serve. A
standby therefore answers nothing at all; clients and model servers find the leader through
location.json and re-read it when the leader stops answering.

Steady state: the lease is renewed in the background and every mutation is persisted to
state.json before its reply, through `StatePersister`, which writes with the generation it last
read or wrote. A deposed admin's write finds a newer generation and fails.

Stepping down: when the lease is lost (a renewal lost the race or ran out of time, or a state
write found a successor's generation) `is_leader()` is False at once, so the cell refuses
mutations with 503 UNAVAILABLE; the HTTP server then shuts down and the process exits with
status 1, leaving the cell to the new leader. SIGTERM / SIGINT shut down cleanly instead: the
lease is handed back (expired) so a standby takes over without waiting for the TTL, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket

import uvicorn

from sax.admin.lease import LeaderLease
from sax.admin.options import AdminOptions
from sax.auth.startup import startup_auth
from sax.errors import Code, SaxError, unavailable
from sax.naming import CellId
from sax.schemas import CellState
from sax.shutdown import QuietServer, stop_on_signals, until
from sax.store import CellStore, Generation, StateStore

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 1
EXIT_BAD_SETUP = 2


class StatePersister:
    """The `persist` callback of `sax.admin.cell.Cell`: write-through to state.json.

    Returns only once the write is durable. The generation chain starts at what `serve` read on
    takeover, so a write can only succeed if nobody else wrote state.json since; losing that
    race means another admin leads, and the lease is marked lost on the spot."""

    def __init__(self, states: StateStore, generation: Generation, lease: LeaderLease) -> None:
        self._states = states
        self._generation = generation
        self._lease = lease
        self._lock = asyncio.Lock()

    async def __call__(self, state: CellState) -> None:
        async with self._lock:
            if not self._lease.is_leader():
                raise unavailable(f"this admin is not the leader of {self._states.cell}")
            try:
                self._generation = await asyncio.to_thread(
                    self._states.write, state, self._generation
                )
            except SaxError as exc:
                if exc.code != Code.FAILED_PRECONDITION:
                    raise
                landed = await asyncio.to_thread(self._landed, state)
                if landed is not None and self._lease.is_leader():
                    self._generation = landed
                    return
                self._lease.mark_lost(f"state.json was written by another admin ({exc.message})")
                raise unavailable(
                    f"this admin is no longer the leader of {self._states.cell}"
                ) from exc
            except Exception as exc:
                raise unavailable(f"could not save the cell state: {exc}") from exc

    def _landed(self, state: CellState) -> Generation | None:
        """The generation of state.json if it already holds `state`: a storage client that retried
        an upload whose first attempt landed sees its own write as a lost race."""
        current, generation = self._states.read()
        return generation if current == state else None


def advertised_host(host: str) -> str:
    """The host others should dial: the bind host, unless it is a wildcard."""
    if host in ("", "0.0.0.0", "::"):
        with contextlib.suppress(OSError):
            return socket.gethostbyname(socket.gethostname())
        return "127.0.0.1"
    return host


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(opts: AdminOptions) -> None:
    """Runs one admin process for `opts.cell` until SIGTERM (returns) or a lost lease (exit 1)."""
    from sax.admin.cell import Cell
    from sax.admin_app import create_app

    try:
        cell_id = CellId.parse(opts.cell)
        store = CellStore(opts.sax_root, cell_id)
        config = await asyncio.to_thread(store.read_config)
        states = StateStore(config.fs_root, cell_id)
        auth = await asyncio.to_thread(
            startup_auth, "admin server", store, opts.host, insecure=opts.insecure
        )
    except SaxError as exc:
        log.error("Cannot start the admin of %s: %s", opts.cell, exc.message)
        raise SystemExit(EXIT_BAD_SETUP) from exc

    address = _join_host_port(advertised_host(opts.host), opts.port)
    admin_id = f"{address}_{secrets.token_hex(8)}"
    lease = LeaderLease(
        store, address, admin_id, ttl_s=opts.lease_ttl_s, renew_s=opts.lease_renew_s
    )
    stop = asyncio.Event()
    with stop_on_signals(stop):
        log.info("Waiting for leader lease of %s", cell_id)
        acquiring = asyncio.ensure_future(lease.acquire())
        if not await until(stop, acquiring):
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquiring
            await lease.release()
            return
        acquiring.result()

        lost = False
        try:
            state, generation = await asyncio.to_thread(states.read)
            cell = Cell(
                cell_id,
                admin_id,
                StatePersister(states, generation, lease),
                join_poll_timeout_s=opts.join_poll_timeout_s,
                server_ttl_s=opts.server_ttl_s,
                watch_timeout_s=opts.watch_timeout_s,
            )
            cell.restore(state)
            cell.set_leader_check(lease.is_leader)
            sock = _bind(opts.host, opts.port)
            server = QuietServer(
                uvicorn.Config(
                    create_app(cell, auth),
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=2,
                ),
                on_started=lambda: log.info(
                    "Serving %s at %s (admin_id %s, %d models restored)",
                    cell_id,
                    address,
                    admin_id,
                    len(state.models),
                ),
            )
            renewing = asyncio.ensure_future(lease.run())

            async def shut_down_when_done() -> None:
                nonlocal lost
                lost = await until(stop, renewing)
                if lost:
                    log.error("Stepping down from %s: %s", cell_id, lease.lost_reason)
                server.should_exit = True

            watcher = asyncio.ensure_future(shut_down_when_done())
            try:
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()
                renewing.cancel()
                sock.close()
        except (OSError, SaxError) as exc:
            log.error("Cannot serve %s on %s: %s", cell_id, address, exc)
            lost = True
        finally:
            await lease.release()
        if lost:
            raise SystemExit(EXIT_LEASE_LOST)
