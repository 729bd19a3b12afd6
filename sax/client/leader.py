"""Where a cell's leader admin listens: ``<sax_root>/sax/<cell>/location.json``, read on demand.

Clients never cache the admin's address across a failure: a connection error or a 503 (an admin
that lost its lease answers UNAVAILABLE) makes the caller `forget` it, so the next attempt
re-reads ``location.json``, which the new leader has rewritten. Shared by the asyncio admin
client (`sax.client.admin`) and the blocking one-shot calls (`sax.client.direct`); it needs
neither an event loop nor pydantic for a local sax_root, so a one-shot process pays for neither.
"""

from __future__ import annotations

import json
import os
import threading

from sax.errors import Code, SaxError
from sax.naming import CellId

DEFAULT_ADMIN_TIMEOUT_S = 60.0  # saxutil's --sax_timeout default
ATTEMPT_TIMEOUT_S = 45.0  # one admin HTTP request; WatchLoc and :wait hold up to 30 s


def resolve_sax_root(sax_root: str | None) -> str:
    """`sax_root`, else ``SAX_ROOT``; FAILED_PRECONDITION when neither is set."""
    root = sax_root or os.environ.get("SAX_ROOT", "")
    if not root:
        raise SaxError(
            Code.FAILED_PRECONDITION,
            "Neither the sax_root argument (--sax_root) nor the SAX_ROOT environment variable is set",
        )
    return root


def local_cell_dir(sax_root: str, cell: CellId) -> str | None:
    """The cell's directory when `sax_root` is a local path or ``file://`` URL (the layout of
    `sax.store`), else None."""
    scheme, sep, rest = sax_root.partition("://")
    if sep and scheme != "file":
        return None
    base = (rest if sep else sax_root).rstrip("/") or "/"
    return os.path.join(base, "sax", cell.cell)


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


class AdminLocator:
    """The leader's ``host:port`` for one cell, read from ``location.json`` and re-read on demand.
    Shared by every loop and thread of the process."""

    def __init__(self, sax_root: str, cell: CellId) -> None:
        self.sax_root = sax_root
        self.cell = cell
        self._address = ""
        self._lock = threading.Lock()

    def cached(self) -> str:
        """The address last read, or "" when the next call must read the file."""
        return self._address

    def load(self) -> str:
        """The cached address, else the one ``location.json`` names (blocking: the file may be
        on gs://). FAILED_PRECONDITION if the cell does not exist, UNAVAILABLE (retryable) if
        no admin has written its address yet."""
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
        local = local_cell_dir(self.sax_root, self.cell)
        address = self._read_local(local) if local is not None else self._read_store()
        if not address:
            # Retryable: a just-started admin writes the file within moments.
            raise SaxError(Code.UNAVAILABLE, f"no admin server has run for Sax cell {self.cell}")
        return address

    def _missing(self) -> SaxError:
        return SaxError(
            Code.FAILED_PRECONDITION, f"Sax cell {self.cell} does not exist under {self.sax_root}"
        )

    def _read_local(self, cell_dir: str) -> str:
        """The address in a local location.json. Its writers replace the file whole
        (`sax.store`), so a plain read sees the old or the new one."""
        if not os.path.exists(os.path.join(cell_dir, "config.json")):
            raise self._missing()
        data = _read_file(os.path.join(cell_dir, "location.json"))
        if data is None:
            return ""
        try:
            address = json.loads(data).get("address", "")
        except (ValueError, AttributeError) as exc:
            raise SaxError(
                Code.INTERNAL, f"{cell_dir}/location.json is not a valid Location: {exc}"
            ) from exc
        if not isinstance(address, str):
            raise SaxError(Code.INTERNAL, f"{cell_dir}/location.json: address is not a string")
        return address

    def _read_store(self) -> str:
        from sax.store import CellStore

        store = CellStore(self.sax_root, self.cell)
        if not store.exists():
            raise self._missing()
        location, _ = store.read_location()
        return location.address if location is not None else ""


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
