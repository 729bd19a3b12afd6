"""The retry and failover decisions of one data call, shared by the sync and async clients.

A call loops: `pick` a replica (raising the watch's permanent error, e.g. NOT_FOUND after an
unpublish), do the I/O, report a failure with `failed` (which raises unless a retry may help,
ejects a replica that refused or answered 503, and avoids the ones this call already failed on),
`release` the replica, and sleep `delay()` (which raises DEADLINE_EXCEEDED, naming the last error,
once the deadline cannot fit another attempt). Only the I/O differs between sync and async.
"""

from __future__ import annotations

from sax.client.picker import PICKER
from sax.client.replicas import ReplicaSet
from sax.client.retry import Backoff, Deadline
from sax.errors import SERVER_RETRYABLE, Code, SaxError


class Attempts:
    def __init__(
        self, what: str, replicas: ReplicaSet, deadline: Deadline, key: str | None = None
    ) -> None:
        """`key`: the prompt prefix that routes this call to its home replica
        (`sax.client.picker.choose`), or None for load alone."""
        self.what = what
        self.deadline = deadline
        self._key = key
        self._replicas = replicas
        self._backoff = Backoff(deadline)
        self._avoid: set[str] = set()
        self._last: SaxError | None = None

    def pick(self) -> str | None:
        """A replica to try now (counted in flight until `release`), or None if none is ready."""
        if self._replicas.error is not None:
            raise self._replicas.error
        addresses = self._replicas.addresses
        if self._avoid and self._avoid.issuperset(addresses):
            self._avoid.clear()  # every replica failed once: start another round
        address = PICKER.acquire(addresses, self._avoid, self._key)
        if address is None:
            self._last = SaxError(Code.UNAVAILABLE, f"no ready replica for {self.what}")
        return address

    def release(self, address: str) -> None:
        PICKER.release(address)

    def failed(self, error: SaxError, address: str) -> None:
        """Raises `error` unless another attempt may succeed (a timeout is the deadline's)."""
        if error.code == Code.DEADLINE_EXCEEDED:
            raise self.deadline.exceeded(self.what, self._last or error)
        if error.code not in SERVER_RETRYABLE:
            raise error
        if error.code == Code.UNAVAILABLE:
            PICKER.eject(address)
        self._avoid.add(address)
        self._last = error

    def delay(self) -> float:
        delay = self._backoff.next_delay()
        if delay is None:
            raise self.deadline.exceeded(self.what, self._last)
        return delay
