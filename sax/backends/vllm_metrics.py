"""vLLM's own Prometheus metrics, one registry per engine.

vLLM's `PrometheusStatLogger` records what its engine sees (time to first token, inter-token
latency, queue time, KV-cache usage, prefix-cache queries and hits, running and waiting requests,
...) into prometheus_client's process-wide registry, and a new engine first unregisters every
``vllm:`` metric there, so with several engines in one process only the newest would be seen.
`stat_logger` returns the same logger class with every metric it creates bound to a registry of
the engine's own instead; the model server reads those at scrape time and serves them on its
``/metrics``, labelled with the model.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def stat_logger(registry: CollectorRegistry) -> type[Any]:
    """vLLM's `PrometheusStatLogger` with all its metrics (the spec-decoding, KV-connector and
    performance ones included) registered in `registry`; pass it to `AsyncLLM` as a stat logger.
    Metrics carry vLLM's labels: ``model_name`` (`EngineSettings.served_model_name`: the sax model id) and ``engine``."""
    from vllm.distributed.ec_transfer.ec_connector.metrics import ECConnectorProm
    from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorProm
    from vllm.v1.metrics.loggers import PrometheusStatLogger
    from vllm.v1.metrics.perf import PerfMetricsProm
    from vllm.v1.spec_decode.metrics import SpecDecodingProm

    # The hooks vLLM's own Ray variant overrides: the classes its metrics are made with.
    kinds = {
        "_gauge_cls": staticmethod(partial(Gauge, registry=registry)),
        "_counter_cls": staticmethod(partial(Counter, registry=registry)),
        "_histogram_cls": staticmethod(partial(Histogram, registry=registry)),
    }

    def bound(base: type[Any]) -> type[Any]:
        return type(base.__name__, (base,), kinds)

    parts = {
        "_spec_decoding_cls": bound(SpecDecodingProm),
        "_kv_connector_cls": bound(KVConnectorProm),
        "_ec_connector_cls": bound(ECConnectorProm),
        "_perf_metrics_cls": bound(PerfMetricsProm),
    }
    return type("EngineStatLogger", (PrometheusStatLogger,), {**kinds, **parts})
