"""Prometheus view of a `ModelServer`, computed at scrape time from the per-method stats.

Nothing is recorded into prometheus_client on the request path: the collector reads the same
`RequestStats` the joins report, so a scrape costs one snapshot per (model, method). Each app
owns its `CollectorRegistry`, so several servers in one process (tests) do not clash.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sax.server.manager import ModelServer

# `Servable.engine_counters` keys exported as ``sax_<key>_total{model}``, with their help text.
ENGINE_COUNTERS = {
    "prefix_cache_queries": "prompt tokens looked up in the engine's prefix cache",
    "prefix_cache_hits": "prompt tokens found in the engine's prefix cache (prefill skipped)",
}


class ServerCollector(Collector):
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "method"]
        status = GaugeMetricFamily(
            "sax_model_status", "1 for the model's current status", labels=["model", "status"]
        )
        pending = GaugeMetricFamily(
            "sax_method_pending", "admitted, unfinished requests", labels=labels
        )
        ok_rate = GaugeMetricFamily(
            "sax_method_successes_per_second", "successes over the last 60 s", labels=labels
        )
        err_rate = GaugeMetricFamily(
            "sax_method_errors_per_second", "errors over the last 60 s", labels=labels
        )
        latency = GaugeMetricFamily(
            "sax_method_latency_seconds",
            "success latency percentiles over the last 60 s",
            labels=[*labels, "quantile"],
        )
        total = CounterMetricFamily(
            "sax_method_requests", "admitted requests by outcome", labels=[*labels, "outcome"]
        )
        engine = {
            name: CounterMetricFamily(f"sax_{name}", text, labels=["model"])
            for name, text in ENGINE_COUNTERS.items()
        }
        for model in self.server.models():
            status.add_metric([model.model_id, model.status.value], 1.0)
            counters = model.servable.engine_counters() if model.servable is not None else {}
            for name, value in counters.items():
                if name in engine:
                    engine[name].add_metric([model.model_id], value)
            for method, gate in model.gates.items():
                key = [model.model_id, method]
                snap = gate.stats.snapshot()
                pending.add_metric(key, snap.pending)
                ok_rate.add_metric(key, snap.successes_per_second)
                err_rate.add_metric(key, snap.errors_per_second)
                latency.add_metric([*key, "0.5"], snap.latency_p50_s)
                latency.add_metric([*key, "0.95"], snap.latency_p95_s)
                latency.add_metric([*key, "0.99"], snap.latency_p99_s)
                total.add_metric([*key, "success"], gate.stats.success_total)
                total.add_metric([*key, "error"], gate.stats.error_total)
        yield from (status, pending, ok_rate, err_rate, latency, total, *engine.values())


def server_registry(server: ModelServer) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServerCollector(server))
    return registry
