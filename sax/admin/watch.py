"""WatchLoc and WaitForReady primitives: a per-model address changelog and a ready counter.

`Watchable` follows the original's Watchable (reference section 6): a base set, a log of
mutations with consecutive seqnos, packed when the log outgrows twice the base. Deliberate
differences: it holds *ready* (LOADED) data addresses only, so clients never pick a replica
that cannot serve; it records real changes only (set semantics); a caller whose ``admin_id``
differs or whose seqno is unknown (too old or ahead) gets the full set at once, so a client
following an older admin never applies a delta on top of a stale set; and a wait is bounded,
ending in a valid "no change" result.

`Waitable` is a counter whose value `sax.admin.placer` sets from reports (never incremented),
so it cannot drift from what the servers say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sax.errors import Code, SaxError
from sax.schemas import Mutation, WatchResult


class Signal:
    """Wakes every current waiter on `fire`; waiters that arrive later wait for the next one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout_s: float) -> bool:
        """True if fired within `timeout_s`."""
        try:
            await asyncio.wait_for(self._event.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return False
        return True


class Watchable:
    def __init__(self) -> None:
        self._next = 0
        self._base: set[str] = set()
        self._log: list[Mutation] = []
        self._current: set[str] = set()
        self._closed = False
        self._signal = Signal()

    @property
    def next_seqno(self) -> int:
        return self._next

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._current)

    def set_values(self, values: Iterable[str]) -> bool:
        """Makes the set equal `values`, logging deletions then additions; True if it changed."""
        if self._closed:
            return False
        target = set(values)
        dels = sorted(self._current - target)
        adds = sorted(target - self._current)
        for addr in dels:
            self._append(Mutation(op="del", address=addr))
        for addr in adds:
            self._append(Mutation(op="add", address=addr))
        if dels or adds:
            self._current = target
            self._signal.fire()
        return bool(dels or adds)

    def _append(self, mutation: Mutation) -> None:
        self._log.append(mutation)
        self._next += 1
        if len(self._log) >= 2 and len(self._log) > 2 * len(self._base):
            half = len(self._log) // 2
            for m in self._log[:half]:
                if m.op == "add":
                    self._base.add(m.address)
                else:
                    self._base.discard(m.address)
            del self._log[:half]

    def close(self) -> None:
        """Unpublish: every watcher, current and future, gets the reset result."""
        self._closed = True
        self._signal.fire()

    async def watch(
        self, admin_id: str, client_admin_id: str, seqno: int, timeout_s: float
    ) -> WatchResult:
        """Changes after `seqno`; waits up to `timeout_s` when there are none yet."""
        if client_admin_id != admin_id:
            seqno = -1  # unknown history: full set
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._closed:
                return WatchResult(admin_id=admin_id, next_seqno=0, has_fullset=True)
            base = self._next - len(self._log)
            if seqno < base or seqno > self._next:
                return WatchResult(
                    admin_id=admin_id,
                    next_seqno=self._next,
                    has_fullset=True,
                    values=sorted(self._current),
                )
            if seqno < self._next:
                return WatchResult(
                    admin_id=admin_id, next_seqno=self._next, changelog=self._log[seqno - base :]
                )
            if not await self._signal.wait(deadline - loop.time()):
                return WatchResult(admin_id=admin_id, next_seqno=seqno)


class Waitable:
    """A ready counter; `wait` returns once it reaches a threshold."""

    def __init__(self) -> None:
        self.value = 0
        self._closed = False
        self._signal = Signal()

    def set(self, value: int) -> None:
        if value != self.value:
            self.value = value
            self._signal.fire()

    def close(self) -> None:
        self._closed = True
        self._signal.fire()

    async def wait(self, threshold: int, timeout_s: float) -> int:
        """The counter once >= `threshold`; CANCELLED if closed, DEADLINE_EXCEEDED on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._closed:
                raise SaxError(Code.CANCELLED, "the model was unpublished while waiting")
            if self.value >= threshold:
                return self.value
            if not await self._signal.wait(deadline - loop.time()):
                raise SaxError(
                    Code.DEADLINE_EXCEEDED,
                    f"{self.value} of {threshold} replicas ready after {timeout_s:g} s",
                )
