"""The HTTP client of each event loop and the mapping from HTTP outcomes to `SaxError`.

One keep-alive `httpx.AsyncClient` per event loop (a blocking client's portal has its own loop)
serves every call made on it, so repeated calls to a replica reuse a connection instead of paying
a TCP handshake. ``trust_env=False``: cell traffic is direct, and an
``HTTP_PROXY`` meant for the internet must not capture loopback or in-cluster addresses.

Cell traffic is plain HTTP (admin and replica URLs are ``http://``), so the client's TLS context
is one with no trust anchors instead of httpx's default, whose CA bundle takes ~30 ms to load in
every process that makes a call (each ``saxutil`` command). Were an ``https://`` URL ever
given, verification would still be required, and fail: closed, not open.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref

import httpx

from sax.client.retry import Deadline, transport_code
from sax.errors import SaxError

CONNECT_TIMEOUT_S = 2.0  # Saxml's model-server dial timeout
_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=60.0)

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def async_client() -> httpx.AsyncClient:
    """The AsyncClient of the running loop (an AsyncClient cannot cross event loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = httpx.AsyncClient(
            limits=_LIMITS, trust_env=False, http1=True, verify=plain_http_tls()
        )
        _async_clients[loop] = client
    return client


def plain_http_tls() -> ssl.SSLContext:
    """A client TLS context that verifies certificates and host names but trusts no CA."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def close_async_client() -> None:
    """Closes the running loop's AsyncClient (its keep-alive connections), if it has one."""
    client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def timeout(seconds: float | None) -> httpx.Timeout:
    """Whole-request timeout `seconds` (None = unbounded) with a short connect timeout."""
    if seconds is not None:
        seconds = max(seconds, 0.001)  # 0 would make the socket non-blocking, not "expired"
    connect = CONNECT_TIMEOUT_S if seconds is None else min(CONNECT_TIMEOUT_S, seconds)
    return httpx.Timeout(seconds, connect=connect)


def error_from_response(status: int, content: bytes) -> SaxError:
    return SaxError.from_reply(status, content)


def error_from_transport(exc: httpx.HTTPError, address: str, deadline: Deadline) -> SaxError:
    """A failure to get an answer from `address`, coded by `sax.client.retry.transport_code`
    (`deadline`: the call's, to tell its own timeouts from the peer's). A timeout reads
    "timed out", as `sax.client.direct` words it."""
    kind = type(exc).__name__
    timed_out = isinstance(exc, httpx.TimeoutException)
    code = transport_code(kind, deadline.spent())
    detail = "timed out" if timed_out else str(exc) or "no answer"
    return SaxError(code, f"{address}: {kind}: {detail}")
