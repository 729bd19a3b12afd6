"""A cell serving the JAX engine end to end: ``sax model-server --backends=jax`` with a 2x2
platform topology (four forced host devices, so parameters and KV cache are sharded over a
4-way mesh), SmolLM2-135M with its real weights published through the admin, and every lm.*
method called through saxutil."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.cell import RealCell
from tests.helpers import wait_for

MODEL = "/sax/test/jaxlm"


def test_jax_smollm2_through_a_cell(tmp_path: Path) -> None:
    with RealCell(tmp_path) as cell:
        server, address = cell.model_server(
            flags=["--backends=jax", "--platform_topology=2x2"],
            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        )
        # Compiling SmolLM2's 81 buckets at load takes minutes on a cold compilation cache;
        # this test is about the sharded cell (tests/jax/test_precompile.py covers compiling).
        run = cell.saxutil(
            "publish", MODEL, "sax.models.jax.SmolLM2_135M", "None", "1", "precompile=false"
        )
        assert run.returncode == 0, run.stderr
        wait_for(lambda: cell.loaded("jaxlm") == [address], timeout_s=240, interval_s=0.5)

        status = json.loads(
            cell.saxutil("ls", MODEL, "--json").stdout
        )  # the replica is reported from the 2x2 server
        assert [r["status"] for r in status["replicas"]] == ["LOADED"]

        run = cell.saxutil(
            "lm.generate",
            "--json",
            "--extra",
            "per_example_max_decode_steps:12",
            MODEL,
            "The capital of France is",
        )
        assert run.returncode == 0, run.stderr
        samples = json.loads(run.stdout)["samples"]
        assert samples[0]["text"].strip() and samples[0]["score"] < 0
        assert "Paris" in samples[0]["text"]

        run = cell.saxutil(
            "lm.score", "--json", MODEL, "The capital of France is", " Paris", " purple"
        )
        assert run.returncode == 0, run.stderr
        paris, purple = json.loads(run.stdout)["scores"]
        assert paris > purple  # real weights know their geography

        run = cell.saxutil("lm.embed", "--json", MODEL, "I like apples.")
        assert run.returncode == 0, run.stderr
        vec = json.loads(run.stdout)["embedding"]
        assert len(vec) == 576 and math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-3)

        run = cell.saxutil("lm.gradient", "--json", MODEL, "Hello", " world")
        assert run.returncode == 0, run.stderr
        grad = json.loads(run.stdout)
        shape = grad["gradients"]["input_embeddings"]["shape"]
        assert shape[1] == 576 and len(
            grad["gradients"]["input_embeddings"]["values"]
        ) == math.prod(shape)
        assert grad["score"][0] < 0

        run = cell.saxutil("lm.generate", "--json", "--extra", "bogus:1", MODEL, "Hi")
        assert run.returncode == 1 and "bogus" in run.stderr
        assert "Traceback" not in server.output()
