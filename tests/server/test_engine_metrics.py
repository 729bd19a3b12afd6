"""Engines' own metrics on ``/metrics``: one family per name across models, each sample
labelled with its model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Metric, generate_latest

from sax.server.metrics import engine_families


def _engine(running: float, hits: float) -> list[Metric]:
    """One engine's registry, with metrics named as vLLM names them."""
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_running", "running", ["engine"], registry=registry).labels("0").set(
        running
    )
    Counter("vllm:prefix_cache_hits", "hits", ["engine"], registry=registry).labels("0").inc(hits)
    return list(registry.collect())


def test_same_named_families_of_two_engines_merge_labelled_by_model() -> None:
    families = engine_families([("/sax/c/a", _engine(3, 16)), ("/sax/c/b", _engine(5, 32))])
    by_name = {f.name: f for f in families}
    assert sorted(by_name) == ["vllm:num_requests_running", "vllm:prefix_cache_hits"]
    running = {s.labels["model"]: s.value for s in by_name["vllm:num_requests_running"].samples}
    assert running == {"/sax/c/a": 3, "/sax/c/b": 5}
    hits = {
        s.labels["model"]: s.value
        for s in by_name["vllm:prefix_cache_hits"].samples
        if s.name == "vllm:prefix_cache_hits_total"
    }
    assert hits == {"/sax/c/a": 16, "/sax/c/b": 32}
    assert all(s.labels["engine"] == "0" for f in families for s in f.samples)


def test_the_merged_families_render_as_one_exposition() -> None:
    registry = CollectorRegistry()

    class Engines:
        def collect(self) -> list[Metric]:
            return engine_families([("/sax/c/a", _engine(1, 2)), ("/sax/c/b", _engine(1, 2))])

    registry.register(Engines())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE vllm:prefix_cache_hits_total counter") == 1
    assert 'vllm:prefix_cache_hits_total{engine="0",model="/sax/c/b"} 2.0' in text
