"""The model server's side of the long-poll join (DESIGN section 5).

The loop finds the leader admin through ``location.json``, POSTs a `JoinRequest` (addresses,
platform, servable model paths with their memory estimates, tags, and a report of every model
it holds), applies the reply's assignment and polls again at once. The admin holds a join up to
its poll timeout when nothing changed, so the HTTP timeout here is well above it. When a local
model status changes, the in-flight poll is cancelled and a fresh join carries the news. Each
join carries the process's incarnation and a rising number, so a given-up join that reaches the
admin after its successor is refused instead of undoing the fresher report.

On a connection error, a 5xx (a standby or deposed admin answers 503) or any other failure, the
loop re-reads ``location.json`` and retries with jittered backoff capped near 1 s, so it follows
a new leader within about a second of it writing its location. An unexpected exception is logged
with its traceback and the loop goes on the same way: it never dies silently.

`leave` sends one last join marked ``draining`` when the server shuts down: the admin drops the
server at once, so clients stop being routed to it before its port closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid

import httpx

from sax.errors import SaxError
from sax.naming import CellId
from sax.schemas import JoinRequest, JoinResponse
from sax.server import registry
from sax.server.manager import ModelServer
from sax.store import CellStore

log = logging.getLogger(__name__)

JOIN_PATH = "/v1/servers:join"
QUICK_REPLY_S = 0.05
QUICK_REPLY_PAUSE_S = 0.25


class _Interrupted(Exception):
    """A local status changed while a join was in flight: send a fresh one."""


class JoinLoop:
    def __init__(
        self,
        server: ModelServer,
        *,
        http_timeout_s: float = 15.0,
        max_backoff_s: float = 1.0,
        store: CellStore | None = None,
    ) -> None:
        opts = server.opts
        self.server = server
        self.store = store or CellStore(opts.sax_root, CellId.parse(opts.cell))
        self.http_timeout_s = http_timeout_s
        self.max_backoff_s = max_backoff_s
        self.paths = registry.servable_paths(set(opts.backends) or None)
        self.path_memory = {p: registry.resolve(p).memory_bytes() for p in self.paths}
        self.joins = 0  # successful replies, for status and tests
        self._wake = asyncio.Event()
        self._joined: tuple[str, str] = ("", "")  # (admin address, admin_id) last joined
        self.incarnation = uuid.uuid4().hex  # with the rising seq, orders this process's joins
        self._seq = itertools.count(1)

    @property
    def headers(self) -> dict[str, str]:
        """The join's headers: JSON, and the server's own credential when it has one."""
        headers = {"content-type": "application/json"}
        if self.server.opts.token:
            headers["authorization"] = f"Bearer {self.server.opts.token}"
        return headers

    def request(self) -> JoinRequest:
        server, opts = self.server, self.server.opts
        return JoinRequest(
            address=server.address,
            data_address=server.address,
            chip=opts.chip,
            topology=opts.topology,
            memory_bytes=opts.memory_bytes,
            servable_model_paths=self.paths,
            servable_memory_bytes=self.path_memory,
            tags=list(opts.tags),
            models=server.reports(),
            admin_id=server.admin_id,
            backend_errors=dict(server.backend_errors),
            draining=server.draining,
            incarnation=self.incarnation,
            seq=next(self._seq),
        )

    async def run(self) -> None:
        """Joins until cancelled."""
        remove = self.server.add_listener(self._wake.set)
        timeout = httpx.Timeout(self.http_timeout_s, connect=min(2.0, self.http_timeout_s))
        failures = 0
        address = ""
        last: JoinResponse | None = None
        loop = asyncio.get_running_loop()
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                while True:
                    if not address:
                        address = await self._admin_address()
                    if not address:
                        failures += 1
                        await self._backoff(failures)
                        continue
                    sent = loop.time()
                    try:
                        reply = await self._join_once(client, address)
                    except _Interrupted:
                        continue
                    except (httpx.HTTPError, SaxError, ValueError) as exc:
                        failures += 1
                        level = logging.WARNING if failures == 1 else logging.DEBUG
                        log.log(level, "Join with admin %s failed: %s", address, exc)
                        address = ""
                        await self._backoff(failures)
                        continue
                    except Exception:
                        failures += 1
                        log.exception("Join with admin %s failed unexpectedly", address)
                        address = ""
                        await self._backoff(failures)
                        continue
                    failures = 0
                    self._joined_with(address, reply.admin_id)
                    try:
                        await self.server.apply(reply.assignment)
                    except Exception:
                        log.exception("Applying the assignment from %s failed", address)
                        await self._backoff(1)
                        continue
                    if reply == last and loop.time() - sent < QUICK_REPLY_S:
                        # The admin should hold a join that brings no news; if it does not,
                        # pace the polls (a local change still goes out at once).
                        await self._pause(QUICK_REPLY_PAUSE_S)
                    last = reply
        finally:
            remove()

    async def leave(self, timeout_s: float = 5.0) -> bool:
        """Tells the admin this server is leaving (a join with ``draining``); retries until the
        admin answers or `timeout_s` passes. True when the admin acknowledged. Call after the
        `run` task has been cancelled."""
        self.server.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        failures = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            while loop.time() < deadline:
                address = self.server.admin_address or await self._admin_address()
                if address:
                    try:
                        await self._join_once(client, address)
                        log.info("Left the cell (admin %s)", address)
                        return True
                    except (httpx.HTTPError, SaxError, ValueError, _Interrupted) as exc:
                        log.debug("Leave via admin %s failed: %s", address, exc)
                    self.server.admin_address = ""
                failures += 1
                await self._backoff(failures)
        log.warning("Could not tell the admin that this server is leaving")
        return False

    async def _admin_address(self) -> str:
        try:
            location, _ = await asyncio.to_thread(self.store.read_location)
        except Exception as exc:
            log.debug("Cannot read the admin location of %s: %s", self.server.cell, exc)
            return ""
        return location.address if location is not None else ""

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _backoff(self, failures: int) -> None:
        delay = min(self.max_backoff_s, 0.05 * 2 ** min(failures, 10))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _join_once(self, client: httpx.AsyncClient, address: str) -> JoinResponse:
        self._wake.clear()
        body = self.request().model_dump_json()
        post = asyncio.ensure_future(
            client.post(
                f"http://{address}{JOIN_PATH}",
                content=body,
                headers=self.headers,
            )
        )
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((post, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not post.done():
                post.cancel()
                await asyncio.wait((post,))
        if post.cancelled():
            raise _Interrupted
        response = post.result()
        if response.status_code != 200:
            try:
                payload = response.json()
            except ValueError:
                payload = response.text
            raise SaxError.from_response(response.status_code, payload)
        return JoinResponse.model_validate_json(response.content)

    def _joined_with(self, address: str, admin_id: str) -> None:
        self.joins += 1
        self.server.joined_at = time.monotonic()
        self.server.admin_address = address
        self.server.admin_id = admin_id
        if self._joined != (address, admin_id):
            self._joined = (address, admin_id)
            log.info("Joined %s", address)
