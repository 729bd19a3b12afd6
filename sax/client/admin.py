"""Admin calls: find the cell's leader through ``location.json`` and follow it when it moves.

Clients never cache the admin's address across a failure: a connection error or a 503 (an admin
that lost its lease answers UNAVAILABLE) makes the next attempt re-read ``location.json``, which
the new leader has rewritten (`sax.client.leader`). That is how Saxml clients follow an admin
failover, minus its quirk of keeping a stale address set (the WatchLoc loop resets on a full set,
see locations.py).
Attempts are retried by `tenacity` with the backoff of `sax.client.retry` until the deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import tenacity

from sax.client import http
from sax.client.credentials import auth_headers
from sax.client.faces import Owner, blocking
from sax.client.leader import (
    ATTEMPT_TIMEOUT_S,
    DEFAULT_ADMIN_TIMEOUT_S,
    AdminLocator,
    locator,
    resolve_sax_root,
)
from sax.client.portal import Portal
from sax.client.retry import Backoff, Deadline
from sax.errors import ADMIN_RETRYABLE, Code, SaxError
from sax.naming import CellId

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "DEFAULT_ADMIN_TIMEOUT_S",
    "AdminClient",
    "AdminLocator",
    "AsyncAdminClient",
    "locator",
    "resolve_sax_root",
]


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    raise http.error_from_response(response.status_code, response.content)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, SaxError) and exc.code in ADMIN_RETRYABLE


def _retrying(deadline: Deadline) -> tenacity.AsyncRetrying:
    """Retries of `ADMIN_RETRYABLE` errors with `Backoff`'s delays, while the deadline leaves
    time for another attempt (`Deadline.spent`); then `tenacity.RetryError`."""
    backoff = Backoff(deadline)

    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(_retryable),
        wait=lambda state: backoff.next_delay() or 0.0,
        stop=lambda state: deadline.spent(),
    )


class AsyncAdminClient:
    """Admin calls for one cell; retries ADMIN_RETRYABLE codes until the deadline.
    `token`: the bearer token (default: `sax.client.credentials`)."""

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
        """The admin's JSON reply (None when empty) to `method` `path`, sending `body` as JSON.

        Raises the admin's `SaxError`; DEADLINE_EXCEEDED, naming the last error, when the
        deadline ends the retries or a reply does not come in time. An UNAVAILABLE admin is
        forgotten, so the next attempt re-reads location.json (a new leader).
        """
        what = f"admin {method} {path}"
        last: SaxError | None = None

        async def attempt() -> Any:
            nonlocal last
            address = ""
            try:
                address = self.locator.cached() or await asyncio.to_thread(self.locator.load)
                response = await http.async_client().request(
                    method,
                    f"http://{address}{path}",
                    json=body,
                    params=params,
                    headers=self.headers,
                    timeout=http.timeout(deadline.cap(attempt_timeout_s)),
                )
                return _check(response)
            except httpx.HTTPError as exc:
                error = http.error_from_transport(exc, f"admin {address}", deadline)
                if error.code == Code.DEADLINE_EXCEEDED:
                    raise deadline.exceeded(what, last or error) from exc
            except SaxError as exc:
                error = exc
            if error.code == Code.UNAVAILABLE and address:
                self.locator.forget(address)
            if error.code in ADMIN_RETRYABLE:
                last = error
            raise error

        try:
            return await _retrying(deadline)(attempt)
        except tenacity.RetryError as exc:
            raise deadline.exceeded(what, exc.last_attempt.exception()) from None


class AdminClient(Owner[AsyncAdminClient]):
    """`AsyncAdminClient`, blocking: its calls run on its own portal (`close`, ``with``)."""

    def __init__(self, sax_root: str | None, cell: CellId, token: str | None = None) -> None:
        super().__init__(AsyncAdminClient(sax_root, cell, token), Portal(f"sax-admin{cell}"))

    request = blocking(AsyncAdminClient.request)
