"""Per-(model, method) request statistics over a sliding window (Saxml's 60 s `RequestStats`).

The hot path (`RequestStats.record`) is a few integer operations and one deque append: counts go
into per-second buckets (a ring of `window_s` slots), and successful latencies into a bounded
deque of recent samples. Rates and percentiles are computed only when someone asks (a join, a
`/metrics` scrape), which is rare next to requests.

Unlike Saxml, `pending` is real (admitted and not finished), and a streamed request counts once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from prometheus_client import Histogram

from sax.schemas import MethodStats

# Seconds: from a fast embed to a long generation under the default 600 s deadline.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WINDOW_S = 60
MAX_LATENCY_SAMPLES = 2048


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


class RequestStats:
    """Counts and latencies of one (model, method); not thread-safe (event loop only)."""

    __slots__ = (
        "_clock",
        "_err",
        "_latencies",
        "_ok",
        "_stamps",
        "error_total",
        "pending",
        "success_total",
        "window_s",
    )

    def __init__(
        self,
        window_s: int = WINDOW_S,
        max_samples: int = MAX_LATENCY_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._stamps = [-1] * window_s
        self._ok = [0] * window_s
        self._err = [0] * window_s
        self._latencies: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.pending = 0
        self.success_total = 0
        self.error_total = 0

    def now(self) -> float:
        return self._clock()

    def record(self, start: float, ok: bool) -> None:
        """Records one finished request that started at `start` (a `now()` value)."""
        now = self._clock()
        sec = int(now)
        i = sec % self.window_s
        if self._stamps[i] != sec:
            self._stamps[i] = sec
            self._ok[i] = 0
            self._err[i] = 0
        if ok:
            self._ok[i] += 1
            self.success_total += 1
            self._latencies.append((now, now - start))
        else:
            self._err[i] += 1
            self.error_total += 1

    def snapshot(self) -> MethodStats:
        now = self._clock()
        oldest = int(now) - self.window_s  # buckets stamped after this are in the window
        ok = err = 0
        for stamp, n_ok, n_err in zip(self._stamps, self._ok, self._err, strict=True):
            if stamp > oldest:
                ok += n_ok
                err += n_err
        horizon = now - self.window_s
        lat = sorted(d for t, d in self._latencies if t > horizon)
        return MethodStats(
            pending=self.pending,
            successes_per_second=ok / self.window_s,
            errors_per_second=err / self.window_s,
            latency_p50_s=percentile(lat, 50),
            latency_p95_s=percentile(lat, 95),
            latency_p99_s=percentile(lat, 99),
        )


def request_latency() -> Histogram:
    """``sax_request_latency_seconds{model, method}``, registered nowhere yet: a `ModelServer`
    owns one and `server_registry` exports it."""
    return Histogram(
        "sax_request_latency_seconds",
        "latency of successful requests, admission to the last byte",
        ["model", "method"],
        buckets=LATENCY_BUCKETS_S,
        registry=None,
    )
