"""Deadlines and jittered exponential backoff, shared by admin and data calls.

Saxml retries retryable codes until the caller's deadline, never a fixed number of times
(``cenkalti/backoff``: 10 ms, x1.1, +-50 % jitter). We start at the same 10 ms so the first retry on
another replica is nearly immediate, but grow faster (x1.6) and cap at 1 s: a client waiting on a
replica that is still loading should notice it within a second, not after a 20 s sleep.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from sax.errors import Code, SaxError

INITIAL_DELAY_S = 0.01
MULTIPLIER = 1.6
MAX_DELAY_S = 1.0
JITTER = 0.5
MIN_ATTEMPT_S = 0.005  # never start an attempt with less time than this left


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock; ``at=None`` means no deadline (wait forever)."""

    at: float | None

    @classmethod
    def after(cls, timeout_s: float | None) -> Deadline:
        """`timeout_s` None or <= 0 means no deadline, like Saxml's ``SetTimeout(-1)``."""
        if timeout_s is None or timeout_s <= 0:
            return cls(None)
        return cls(time.monotonic() + timeout_s)

    def remaining(self) -> float | None:
        if self.at is None:
            return None
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def spent(self) -> bool:
        """Whether too little is left for another attempt (`MIN_ATTEMPT_S`)."""
        left = self.remaining()
        return left is not None and left <= MIN_ATTEMPT_S

    def cap(self, seconds: float) -> float:
        """`seconds`, shortened to what is left of the deadline."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def exceeded(self, what: str, last: BaseException | None) -> SaxError:
        """The error to raise when the deadline ends a retry loop: says what was last seen."""
        detail = f"; last error: {last}" if last is not None else ""
        return SaxError(Code.DEADLINE_EXCEEDED, f"{what}: deadline exceeded{detail}")


def transport_code(kind: str, deadline_spent: bool) -> Code:
    """The code of a request that got no answer, `kind` named as httpx names it (``ConnectError``,
    ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``).

    A timeout is the caller's deadline (DEADLINE_EXCEEDED, ending the retries and naming the error
    before it) when it is a read or write timeout, whose attempt had all the deadline's time, or
    a connect timeout that came once the deadline was spent: that attempt had only the deadline's
    last moments, so the timeout says nothing about the peer. Anything else, a connect timeout
    with time left included, means the peer is unreachable or died mid-request (UNAVAILABLE, so
    another replica is tried).
    """
    if kind.endswith("Timeout") and (kind != "ConnectTimeout" or deadline_spent):
        return Code.DEADLINE_EXCEEDED
    return Code.UNAVAILABLE


@dataclass
class Backoff:
    """Successive jittered delays; `next_delay` returns None once the deadline cannot fit another
    attempt, and never sleeps into the last `MIN_ATTEMPT_S` (an attempt with no time left would
    only report a timeout instead of the error that made us retry)."""

    deadline: Deadline
    _delay: float = field(default=INITIAL_DELAY_S)

    def next_delay(self) -> float | None:
        delay = self._delay * random.uniform(1 - JITTER, 1 + JITTER)
        self._delay = min(self._delay * MULTIPLIER, MAX_DELAY_S)
        left = self.deadline.remaining()
        if left is None:
            return delay
        if left <= MIN_ATTEMPT_S:
            return None
        return min(delay, left - MIN_ATTEMPT_S)
