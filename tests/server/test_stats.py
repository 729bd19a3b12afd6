"""RequestStats: windowed rates, percentiles, eviction (Saxml's utils_test worked example)."""

from __future__ import annotations

import pytest

from sax.server.stats import RequestStats, percentile


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_worked_example_matches_saxml() -> None:
    clock = Clock()
    stats = RequestStats(window_s=8, clock=clock)
    for latency in range(100):
        stats.record(clock.t - latency, ok=True)
    stats.record(clock.t, ok=False)
    snap = stats.snapshot()
    assert snap.successes_per_second == pytest.approx(12.5)
    assert snap.errors_per_second == pytest.approx(0.125)
    assert snap.latency_p50_s == pytest.approx(49.5)
    assert snap.latency_p95_s == pytest.approx(94.05)
    assert snap.latency_p99_s == pytest.approx(98.01)
    assert (stats.success_total, stats.error_total) == (100, 1)


def test_old_requests_leave_the_window() -> None:
    clock = Clock()
    stats = RequestStats(window_s=60, clock=clock)
    stats.record(clock.t - 5.0, ok=True)
    clock.t += 30
    stats.record(clock.t - 1.0, ok=True)
    stats.record(clock.t, ok=False)
    snap = stats.snapshot()
    assert snap.successes_per_second == pytest.approx(2 / 60)
    assert snap.latency_p99_s == pytest.approx(4.96)
    clock.t += 45  # the first success is now 75 s old, the others 45 s
    snap = stats.snapshot()
    assert snap.successes_per_second == pytest.approx(1 / 60)
    assert snap.errors_per_second == pytest.approx(1 / 60)
    assert snap.latency_p50_s == pytest.approx(1.0)
    clock.t += 61
    snap = stats.snapshot()
    assert (snap.successes_per_second, snap.errors_per_second, snap.latency_p50_s) == (0, 0, 0)
    assert stats.success_total == 2  # totals are cumulative (Prometheus counters)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
