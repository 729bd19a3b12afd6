"""Prometheus view of a `ModelServer`.

Gauges and counters are computed at scrape time: the collector reads the same `RequestStats`
the joins report, so a scrape costs one snapshot per (model, method). Request latency is also a
histogram, ``sax_request_latency_seconds{model, method}``, observed on the request path when an
admitted request succeeds (`sax.server.stats.request_latency`): unlike the 60 s percentiles, its buckets sum
across replicas and servers. Engines' own metrics (vLLM's time to first token, inter-token
latency, queue time, KV-cache usage, prefix-cache hits: ``vllm:*``) are read from each loaded
engine's registry at scrape time and labelled with the ``model``. Each app owns its `CollectorRegistry`, so several servers in one
process (tests) do not clash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sax.server.manager import ModelServer


def engine_families(engines: list[tuple[str, list[Metric]]]) -> list[Metric]:
    """Engines' own metric families (`Servable.engine_metrics`), given as (model id, families):
    one family per name across models, each sample labelled with its ``model`` as well."""
    merged: dict[str, Metric] = {}
    for model_id, families in engines:
        for family in families:
            into = merged.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            into.samples += [
                s._replace(labels={"model": model_id, **s.labels}) for s in family.samples
            ]
    return list(merged.values())


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
        engines: list[tuple[str, list[Metric]]] = []
        for replica in self.server.replicas():
            status.add_metric([replica.model_id, replica.status.value], 1.0)
            if replica.built is not None:
                engines.append((replica.model_id, replica.built.engine_metrics()))
            for method, gate in replica.gates.items():
                key = [replica.model_id, method]
                snap = gate.stats.snapshot()
                pending.add_metric(key, snap.pending)
                ok_rate.add_metric(key, snap.successes_per_second)
                err_rate.add_metric(key, snap.errors_per_second)
                latency.add_metric([*key, "0.5"], snap.latency_p50_s)
                latency.add_metric([*key, "0.95"], snap.latency_p95_s)
                latency.add_metric([*key, "0.99"], snap.latency_p99_s)
                total.add_metric([*key, "success"], gate.stats.success_total)
                total.add_metric([*key, "error"], gate.stats.error_total)
        yield from (status, pending, ok_rate, err_rate, latency, total)
        yield from engine_families(engines)


def server_registry(server: ModelServer) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServerCollector(server))
    registry.register(server.latency)
    return registry
