"""Whether a server may start where it binds, with the credentials it has.

Secure by default, easy locally: a server bound to a loopback address runs with auth off when
the cell has no principals (and says so in its log); bound to any other address it refuses to
start unless the cell has principals, or it was started with ``--insecure``. A model server of a
cell with auth on also needs its own token (``--token`` / ``SAX_TOKEN``), known to the cell,
since the admin refuses joins without one.
"""

from __future__ import annotations

import ipaddress
import logging

from sax.auth.directory import Directory
from sax.auth.source import AuthSource
from sax.errors import Code, SaxError
from sax.store import CellStore

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_policy(
    what: str, host: str, directory: Directory | None, *, insecure: bool, token: str | None = None
) -> str:
    """The log line describing the server's auth; FAILED_PRECONDITION when it must not start.
    `token` is checked when given (model servers: pass "" for none)."""
    if directory is None:
        if is_loopback(host):
            return f"{what}: auth is off (loopback bind {host}, the cell has no principals)"
        if insecure:
            return f"{what}: auth is OFF on {host} (--insecure): anyone who reaches it is trusted"
        raise SaxError(
            Code.FAILED_PRECONDITION,
            f"{what} binds {host}, which is not loopback, and the cell has no principals: add "
            "credentials with `saxutil addtoken`, bind 127.0.0.1, or pass --insecure",
        )
    if token is not None:
        if not token:
            raise SaxError(
                Code.FAILED_PRECONDITION,
                f"{what}: the cell has auth on, so this server needs its own token to join "
                "(--token or SAX_TOKEN; `saxutil addtoken` makes one)",
            )
        caller = directory.identify(token)
        if caller is None:
            raise SaxError(Code.FAILED_PRECONDITION, f"{what}: its token is not valid in this cell")
        return f"{what}: auth is on; joining as {caller.principal}"
    return f"{what}: auth is on ({len(directory.principals)} principals)"


def startup_auth(
    what: str, store: CellStore, host: str, *, insecure: bool, token: str | None = None
) -> AuthSource:
    """Reads the cell's auth settings (blocking) and applies `start_policy`, logging the outcome;
    raises FAILED_PRECONDITION when the server must not start."""
    source = AuthSource(store)
    directory = source.load()
    line = start_policy(what, host, directory, insecure=insecure, token=token)
    exposed = directory is None and not is_loopback(host)
    log.log(logging.WARNING if exposed else logging.INFO, "%s", line)
    return source
