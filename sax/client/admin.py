"""Admin calls: find the cell's leader through ``location.json`` and follow it when it moves.

Clients never cache the admin's address across a failure: a connection error or a 503 (an admin
that lost its lease answers UNAVAILABLE) makes the next attempt re-read ``location.json``, which
the new leader has rewritten. That is how Saxml clients follow an admin failover, minus its
quirk of keeping a stale address set (the WatchLoc loop resets on a full set, see locations.py).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx

from sax.client import http
from sax.client.credentials import auth_headers
from sax.client.retry import Backoff, Deadline
from sax.errors import ADMIN_RETRYABLE, Code, SaxError
from sax.naming import CellId

DEFAULT_ADMIN_TIMEOUT_S = 60.0  # saxutil's --sax_timeout default
ATTEMPT_TIMEOUT_S = 45.0  # one admin HTTP request; WatchLoc and :wait hold up to 30 s


def resolve_sax_root(sax_root: str | None) -> str:
    root = sax_root or os.environ.get("SAX_ROOT", "")
    if not root:
        raise SaxError(
            Code.FAILED_PRECONDITION,
            "Neither the sax_root argument (--sax_root) nor the SAX_ROOT environment variable is set",
        )
    return root


class AdminLocator:
    """The leader's ``host:port`` for one cell, read from ``location.json`` and re-read on demand."""

    def __init__(self, sax_root: str, cell: CellId) -> None:
        self.sax_root = sax_root
        self.cell = cell
        self._address = ""
        self._lock = threading.Lock()

    def address(self) -> str:
        address = self._address
        if address:
            return address
        with self._lock:
            if not self._address:
                self._address = self._read()
            return self._address

    def forget(self, address: str) -> None:
        """Drops `address` if it is still the cached one, so the next call re-reads the file."""
        with self._lock:
            if self._address == address:
                self._address = ""

    def _read(self) -> str:
        from sax.store import CellStore

        store = CellStore(self.sax_root, self.cell)
        if not store.exists():
            raise SaxError(
                Code.FAILED_PRECONDITION,
                f"Sax cell {self.cell} does not exist under {self.sax_root}",
            )
        location, _ = store.read_location()
        if location is None or not location.address:
            # Retryable: a just-started admin writes the file within moments.
            raise SaxError(Code.UNAVAILABLE, f"no admin server has run for Sax cell {self.cell}")
        return location.address


_locators: dict[tuple[str, CellId], AdminLocator] = {}
_locators_lock = threading.Lock()


def locator(sax_root: str | None, cell: CellId) -> AdminLocator:
    """One locator per (sax_root, cell) per process, so every caller benefits from a re-read."""
    key = (resolve_sax_root(sax_root), cell)
    with _locators_lock:
        found = _locators.get(key)
        if found is None:
            found = _locators[key] = AdminLocator(key[0], cell)
        return found


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    raise http.error_from_response(response.status_code, response.content)


def _attempt_timeout(deadline: Deadline, attempt_timeout_s: float) -> float:
    return deadline.cap(attempt_timeout_s)


class AdminClient:
    """Blocking admin calls for one cell; retries ADMIN_RETRYABLE codes until the deadline.
    `token`: the bearer token (default: `sax.client.credentials`)."""

    def __init__(self, sax_root: str | None, cell: CellId, token: str | None = None) -> None:
        self.locator = locator(sax_root, cell)
        self.headers = auth_headers(token)

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        body: Any = None,
        params: dict[str, Any] | None = None,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> Any:
        backoff = Backoff(deadline)
        last: SaxError | None = None
        while True:
            address = ""
            try:
                address = self.locator.address()
                response = http.sync_client().request(
                    method,
                    f"http://{address}{path}",
                    json=body,
                    params=params,
                    headers=self.headers,
                    timeout=http.timeout(_attempt_timeout(deadline, attempt_timeout_s)),
                )
                return _check(response)
            except (httpx.HTTPError, SaxError) as exc:
                last = _retryable(exc, f"admin {method} {path}", address, deadline, last)
            time.sleep(
                _next_delay(
                    self.locator, backoff, deadline, f"admin {method} {path}", last, address
                )
            )


def _retryable(
    exc: Exception, what: str, address: str, deadline: Deadline, last: SaxError | None
) -> SaxError:
    """The error to retry after a failed admin attempt; raises what must not be retried."""
    if isinstance(exc, httpx.HTTPError):
        error = http.error_from_transport(exc, f"admin {address}")
        if error.code == Code.DEADLINE_EXCEEDED:
            raise deadline.exceeded(what, last or error) from exc
        return error
    assert isinstance(exc, SaxError)
    if exc.code not in ADMIN_RETRYABLE:
        raise exc
    return exc


def _next_delay(
    locator: AdminLocator,
    backoff: Backoff,
    deadline: Deadline,
    what: str,
    last: SaxError,
    address: str,
) -> float:
    """How long to wait before the next attempt; an UNAVAILABLE admin is forgotten so the next
    attempt re-reads location.json (a new leader). Raises once the deadline is spent."""
    if last.code == Code.UNAVAILABLE and address:
        locator.forget(address)
    delay = backoff.next_delay()
    if delay is None:
        raise deadline.exceeded(what, last)
    return delay


class AsyncAdminClient:
    """`AdminClient` for asyncio callers; the file read runs in a thread (it may be gs://)."""

    def __init__(self, sax_root: str | None, cell: CellId, token: str | None = None) -> None:
        self.locator = locator(sax_root, cell)
        self.headers = auth_headers(token)

    async def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        body: Any = None,
        params: dict[str, Any] | None = None,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> Any:
        import asyncio  # here, not at the top: the blocking CLI never loads it

        backoff = Backoff(deadline)
        last: SaxError | None = None
        while True:
            address = ""
            try:
                address = self.locator._address or await asyncio.to_thread(self.locator.address)
                response = await http.async_client().request(
                    method,
                    f"http://{address}{path}",
                    json=body,
                    params=params,
                    headers=self.headers,
                    timeout=http.timeout(_attempt_timeout(deadline, attempt_timeout_s)),
                )
                return _check(response)
            except (httpx.HTTPError, SaxError) as exc:
                last = _retryable(exc, f"admin {method} {path}", address, deadline, last)
            await asyncio.sleep(
                _next_delay(
                    self.locator, backoff, deadline, f"admin {method} {path}", last, address
                )
            )
