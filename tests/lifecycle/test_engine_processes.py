"""A model server process supervising real engines: the newcomer's cold start, a killed engine,
SIGKILL of the server.

One cell of real processes for the module: an admin and a model server started with an empty
model cache (``SAX_CACHE``), to which SmolLM2 (converted from its GGUF on first use), MiniLM and
the JAX tiny model are published at the same moment. That is what ``make demo`` does on a fresh
machine, where concurrent first imports of torch/transformers/vLLM in loader threads used to
leave half-initialised modules behind and fail every load.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import psutil
import pytest

from sax.schemas import ReplicaStatus, ServerStatus
from tests.cell import RealCell
from tests.helpers import Proc, running, wait_for

pytestmark = pytest.mark.timeout(900)

MODELS = {
    "smollm": "sax.models.vllm.SmolLM2_135M",
    "minilm": "sax.models.vllm.MiniLML6",
    "jaxtiny": "sax.models.jax.Tiny",
}
# Small KV caches: CPU memory is shared with the rest of the suite.
OVERRIDES = {"smollm": "kv_cache_gib=0.25", "minilm": "kv_cache_gib=0.125", "jaxtiny": ""}


class ColdCell:
    def __init__(self, cell: RealCell, proc: Proc, address: str) -> None:
        self.cell = cell
        self.server = psutil.Process(proc.p.pid)
        self.log = proc.output
        self.address = address

    def status(self) -> ServerStatus:
        reply = httpx.get(f"http://{self.address}/v1/status", timeout=10)
        return ServerStatus.model_validate(reply.json())

    def replica(self, name: str) -> tuple[ReplicaStatus | None, str]:
        info = self.cell.model(name)
        if not info.replicas:
            return None, info.reason
        return info.replicas[0].status, info.replicas[0].failure_reason


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdCell]:
    tmp = tmp_path_factory.mktemp("cold-cell")
    cache = tmp / "cache"
    cache.mkdir()
    with RealCell(tmp) as cell:
        proc, address = cell.model_server(
            flags=("--backends=vllm,jax", "--max_concurrent_loads=3"),
            env={"SAX_CACHE": str(cache)},
        )
        publishers = [
            threading.Thread(target=_publish, args=(cell, name, path))
            for name, path in MODELS.items()
        ]
        for t in publishers:
            t.start()
        for t in publishers:
            t.join()
        for name in MODELS:
            done = cell.saxutil("wait", f"/sax/test/{name}", "--timeout", "600", timeout=660)
            assert done.returncode == 0, (done.stdout, done.stderr, proc.output()[-3000:])
        yield ColdCell(cell, proc, address)


def _publish(cell: RealCell, name: str, path: str) -> None:
    args = ["publish", f"/sax/test/{name}", path, "None", "1"]
    if OVERRIDES[name]:
        args.append(OVERRIDES[name])
    out = cell.saxutil(*args)
    assert out.returncode == 0, out.stderr


def test_models_published_at_once_on_a_cold_cache_all_serve(cold: ColdCell) -> None:
    gen = cold.cell.saxutil("lm.generate", "/sax/test/smollm", "Name a colour.", "--json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["samples"][0]["text"].strip()
    emb = cold.cell.saxutil("lm.embed", "/sax/test/minilm", "I like apples.", "--json")
    assert emb.returncode == 0, emb.stderr
    assert len(json.loads(emb.stdout)["embedding"]) == 384
    jax = cold.cell.saxutil("lm.generate", "/sax/test/jaxtiny", "hello", "--json")
    assert jax.returncode == 0, jax.stderr
    assert cold.status().backend_errors == {}


def test_engines_run_the_openmp_runtime_vllm_serve_runs(cold: ColdCell) -> None:
    """The model server leaves the OpenMP runtime to vLLM's CPU platform, as `vllm serve` does:
    torch's GNU OpenMP is preloaded into every engine core, and Intel's runtime is not loaded."""
    pids = cold.status().engine_pids
    for name in ("smollm", "minilm"):
        (pid,) = pids[f"/sax/test/{name}"]
        maps = [m.path for m in psutil.Process(pid).memory_maps() if m.path]
        libraries = {os.path.basename(path) for path in maps}
        assert any(lib.startswith("libgomp") for lib in libraries), (name, sorted(libraries))
        assert not any(lib.startswith("libiomp") for lib in libraries), name


def _stream_until_error(address: str, started: threading.Event, outcome: dict[str, object]) -> None:
    body = {"text": "Count from one to five hundred.", "extra_inputs": {"max_decode_steps": 1500}}
    try:
        with httpx.stream(
            "POST",
            f"http://{address}/v1/models/smollm/lm.generate_stream",
            json=body,
            timeout=120,
        ) as reply:
            for line in reply.iter_lines():
                started.set()
                if line.startswith("event: error"):
                    outcome["error_at"] = time.monotonic()
                if line.startswith("data:") and "error_at" in outcome and "error" not in outcome:
                    outcome["error"] = json.loads(line[5:])
    except httpx.HTTPError as exc:
        outcome["transport"] = repr(exc)
    finally:
        outcome["ended_at"] = time.monotonic()
        started.set()


def test_a_killed_engine_fails_its_model_fast_and_is_re_placed(cold: ColdCell) -> None:
    (pid,) = cold.status().engine_pids["/sax/test/smollm"]
    started = threading.Event()
    outcome: dict[str, object] = {}
    streamer = threading.Thread(target=_stream_until_error, args=(cold.address, started, outcome))
    streamer.start()
    assert started.wait(120)
    killed_at, killed_wall = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)

    # The request in flight ends with a retryable error, quickly.
    streamer.join(30)
    assert not streamer.is_alive()
    assert float(outcome["ended_at"]) - killed_at < 10, outcome  # type: ignore[arg-type]
    error = outcome.get("error")
    assert isinstance(error, dict) and error["error"]["code"] == "UNAVAILABLE", outcome

    # The model server moves the model to FAILED with the reason (its log line is the durable
    # record: the FAILED window ends as soon as the admin unassigns the replica to re-place it).
    line = f"The engine of /sax/test/smollm died: the engine process {pid} exited"

    def detected_at() -> float | None:
        for text in cold.log().splitlines():
            if line in text:
                stamp = datetime.strptime(text[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
        return None

    found = wait_for(detected_at, timeout_s=30)
    assert found - killed_wall < 10, found - killed_wall
    wait_for(lambda: cold.replica("smollm")[0] == ReplicaStatus.LOADED, timeout_s=300)
    gen = cold.cell.saxutil("lm.generate", "/sax/test/smollm", "Name a colour.", "--json")
    assert gen.returncode == 0, gen.stderr
    assert pid not in {p for ps in cold.status().engine_pids.values() for p in ps}


def test_engine_processes_exit_when_the_model_server_is_sigkilled(cold: ColdCell) -> None:
    """Runs last in this module: it ends the cell's model server."""
    engines = [psutil.Process(p) for ps in cold.status().engine_pids.values() for p in ps]
    assert engines
    tree = [cold.server, *cold.server.children(recursive=True)]
    os.kill(cold.server.pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not running(alive), alive
    assert {p.pid for p in engines} <= {p.pid for p in gone}
