"""Replica choice: power of two choices on this process's own in-flight counts.

Two random ready replicas are drawn and the one with fewer of *our* requests in flight wins. It
needs no coordination, spreads load as evenly as least-loaded, and adapts to a slow replica
(its requests pile up, so it is chosen less). Its classic trap is a dead replica that fails
instantly and so always looks idle; `eject` therefore sidelines an address that refused a
connection or answered 503 for `EJECT_S`, until the admin's WatchLoc removes it for good.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Container, Sequence

EJECT_S = 1.0


class Picker:
    """Per-address pending counts and ejections, shared by every model of the process (a server
    hosting two models is loaded by both)."""

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}
        self._ejected_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, addresses: Sequence[str], avoid: Container[str] = ()) -> str | None:
        """Chooses a replica and counts a request in flight on it; None if `addresses` is empty.

        `avoid` holds replicas this call already failed on; ejected ones are skipped too, unless
        nothing else is left (then any replica beats failing without trying).
        """
        if not addresses:
            return None
        with self._lock:
            now = time.monotonic()
            candidates = [
                a for a in addresses if a not in avoid and self._ejected_until.get(a, 0.0) <= now
            ]
            if not candidates:
                candidates = [a for a in addresses if a not in avoid] or list(addresses)
            if len(candidates) == 1:
                choice = candidates[0]
            else:
                a, b = random.sample(candidates, 2)
                choice = a if self._pending.get(a, 0) <= self._pending.get(b, 0) else b
            self._pending[choice] = self._pending.get(choice, 0) + 1
            return choice

    def release(self, address: str) -> None:
        with self._lock:
            left = self._pending.get(address, 0) - 1
            if left > 0:
                self._pending[address] = left
            else:
                self._pending.pop(address, None)

    def eject(self, address: str) -> None:
        with self._lock:
            self._ejected_until[address] = time.monotonic() + EJECT_S

    def pending(self, address: str) -> int:
        return self._pending.get(address, 0)


PICKER = Picker()
