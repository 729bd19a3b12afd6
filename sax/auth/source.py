"""`AuthSource`: the cell's auth settings as the running admin and model servers see them.

The original re-read its config every 5 s; this re-reads ``config.json`` at most every
`refresh_s` (2 s), on the request that finds the snapshot stale, so a token revoked with
``saxutil revoke`` stops working within about `refresh_s` on every server, with no restart and
no background task. One read serves concurrent requests. A failed read keeps the last good
snapshot (and says so in the log); with no good snapshot ever, requests that need one get
UNAVAILABLE. A missing ``config.json`` means auth off, as does a config without principals.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sax.auth.directory import Directory
from sax.errors import Code, SaxError, unavailable
from sax.schemas import CellConfig
from sax.store import CellStore

log = logging.getLogger(__name__)

REFRESH_S = 2.0


class AuthSource:
    """Live `Directory` of one cell; `AuthSource.off()` is a cell with auth off for good."""

    def __init__(self, store: CellStore | None, refresh_s: float = REFRESH_S) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.config: CellConfig | None = None
        self._directory: Directory | None = None
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def off(cls) -> AuthSource:
        source = cls(None)
        source._loaded_at = float("inf")
        return source

    @property
    def enabled(self) -> bool:
        """Whether the last snapshot has auth on."""
        return self._directory is not None

    def load(self) -> Directory | None:
        """Reads config.json now (blocking); raises what the read raised."""
        if self.store is None:
            return None
        config = self._read()
        self._install(config)
        return self._directory

    def snapshot(self) -> Directory | None:
        """The last snapshot read (UNAVAILABLE if none was ever read); `current` refreshes it."""
        if self._loaded_at is None:
            raise unavailable("the cell's config.json has not been read yet")
        return self._directory

    async def current(self) -> Directory | None:
        """The snapshot, re-read first when it is older than `refresh_s`."""
        loaded = self._loaded_at
        if loaded is not None and time.monotonic() - loaded < self.refresh_s:
            return self._directory
        async with self._lock:
            loaded = self._loaded_at
            if loaded is None or time.monotonic() - loaded >= self.refresh_s:
                await self._refresh()
        return self._directory

    async def _refresh(self) -> None:
        try:
            config = await asyncio.to_thread(self._read)
        except Exception as exc:
            if self._loaded_at is None:
                log.error("Cannot read the cell config: %s", exc)
                raise unavailable("the cell's config.json cannot be read; try again") from exc
            log.warning("Cannot re-read the cell config, keeping the last one: %s", exc)
            self._loaded_at = time.monotonic()
            return
        self._install(config)

    def _read(self) -> CellConfig | None:
        assert self.store is not None
        try:
            return self.store.read_config()
        except SaxError as exc:
            if exc.code == Code.FAILED_PRECONDITION:  # no config.json
                return None
            raise

    def _install(self, config: CellConfig | None) -> None:
        directory = Directory.from_config(config) if config is not None else None
        if (directory is None) != (self._directory is None) and self._loaded_at is not None:
            log.warning("Auth is now %s for this cell", "on" if directory else "OFF")
        self.config = config
        self._directory = directory
        self._loaded_at = time.monotonic()
