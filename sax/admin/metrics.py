"""Prometheus metrics of one admin. Each `Cell` owns a registry, so tests can run many."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Snapshot:
    """Gauges read at scrape time."""

    models: int
    servers: int
    replicas_by_status: Mapping[str, int]
    requested_replicas: int


class _Gauges(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield GaugeMetricFamily("sax_admin_models", "Published models.", value=s.models)
        yield GaugeMetricFamily("sax_admin_servers", "Live model servers.", value=s.servers)
        yield GaugeMetricFamily(
            "sax_admin_requested_replicas", "Replicas requested.", value=s.requested_replicas
        )
        replicas = GaugeMetricFamily(
            "sax_admin_replicas", "Placed replicas by reported status.", labels=["status"]
        )
        for status, n in sorted(s.replicas_by_status.items()):
            replicas.add_metric([status], n)
        yield replicas


@dataclass
class AdminMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.join_latency = self._latency(
            "sax_admin_join_handling_seconds",
            "Time to process a join, not counting the long-poll hold.",
        )
        self.publish_to_assignment = self._latency(
            "sax_admin_publish_to_assignment_seconds",
            "Time from a publish to the first placement that assigns the model a server.",
        )
        self.placement_latency = self._latency(
            "sax_admin_placement_seconds", "Time to compute and install one placement."
        )
        self.dead_servers = Counter(
            "sax_admin_dead_servers", "Servers declared dead.", ["why"], registry=self.registry
        )

    def _latency(self, name: str, documentation: str) -> Histogram:
        return Histogram(name, documentation, buckets=_LATENCY_BUCKETS, registry=self.registry)

    def watch_gauges(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry.register(_Gauges(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)
