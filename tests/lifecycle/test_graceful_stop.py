"""SIGTERM stops a model server and `sax up` cleanly, with real processes and real vLLM engines.

Two model servers each hold a replica of the tiny vLLM model while client threads call it in a
loop. SIGTERM to one server: it tells the admin it is leaving (WatchLoc drops its address before
its port closes), drains what is in flight, unloads its engine, and exits 0 with no process of
its tree left; the client never sees a failed call. Then `sax up` gets SIGTERM and takes its
whole cell down the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

import sax.client
from sax.errors import SaxError
from tests.cell import LocationLog, RealCell
from tests.helpers import SAX, SAXUTIL, free_port, running, wait_for, wait_http

pytestmark = pytest.mark.timeout(900)

TINY = "sax.models.vllm.Tiny"
TINY_OVERRIDES = ("kv_cache_gib=0.125", "max_model_len=256")


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_sigterm_drains_leaves_the_cell_and_stops_every_engine(tmp_path: Path) -> None:
    with RealCell(tmp_path) as cell:
        servers = cell.model_servers(2, flags=("--backends=vllm", "--drain_timeout=20"))
        out = cell.saxutil("publish", "/sax/test/tiny", TINY, "None", "2", *TINY_OVERRIDES)
        assert out.returncode == 0, out.stderr
        done = cell.saxutil("wait", "/sax/test/tiny", "--timeout", "600", timeout=660)
        assert done.returncode == 0, (done.stdout, [p.output()[-2000:] for p, _ in servers])
        (proc_a, address_a), (_, address_b) = servers
        tree_a = _tree(proc_a.p.pid)
        assert len(tree_a) > 1  # the server and its engine core

        model = sax.client.Model("/sax/test/tiny", sax_root=cell.sax_root)
        stop = threading.Event()
        failures: list[str] = []
        calls = [0]

        def call_in_a_loop() -> None:
            while not stop.is_set():
                try:
                    model.lm.generate("hello", {"per_example_max_decode_steps": 32})
                    calls[0] += 1
                except SaxError as exc:
                    failures.append(f"{exc.code}: {exc.message}")

        locations = LocationLog(cell.sax_root, "/sax/test/tiny")
        closed_at: list[float] = []

        def watch_port() -> None:
            while _port_open(address_a):
                time.sleep(0.01)
            closed_at.append(time.monotonic())

        try:
            locations.wait(lambda a: set(a) == {address_a, address_b}, timeout_s=30)
            workers = [threading.Thread(target=call_in_a_loop) for _ in range(4)]
            for w in workers:
                w.start()
            wait_for(lambda: calls[0] >= 8, timeout_s=120)
            port_watch = threading.Thread(target=watch_port)
            port_watch.start()
            sent_at = time.monotonic()
            os.kill(proc_a.p.pid, signal.SIGTERM)
            assert proc_a.p.wait(timeout=180) == 0, proc_a.output()[-3000:]
            port_watch.join(10)
            dropped_at = locations.wait(lambda a: address_a not in a, since=sent_at)
            assert closed_at and dropped_at < closed_at[0], (dropped_at, closed_at)
            before = calls[0]
            wait_for(lambda: calls[0] >= before + 8, timeout_s=120)  # the other replica serves
        finally:
            stop.set()
            locations.stop()
        for w in workers:
            w.join(60)
        assert failures == []
        # The tree is gone (a killed process may still be freeing its memory for a moment).
        wait_for(lambda: not running(tree_a), timeout_s=30)
        assert "Left the cell" in proc_a.output()


def test_sigterm_to_sax_up_stops_its_whole_cell(tmp_path: Path) -> None:
    admin_port, server_port = free_port(), free_port()
    root = tmp_path / "root"
    up = subprocess.Popen(
        [
            SAX,
            "up",
            f"--sax_root={root}",
            f"--fs_root={tmp_path / 'fs'}",
            f"--admin_port={admin_port}",
            f"--server_port={server_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{server_port}/healthz", timeout_s=120)
        env = {**os.environ, "SAX_ROOT": str(root)}
        run = [SAXUTIL, "publish", "/sax/test/tiny", TINY, "None", "1", *TINY_OVERRIDES]
        assert subprocess.run(run, env=env, capture_output=True).returncode == 0
        waited = subprocess.run(
            [SAXUTIL, "wait", "/sax/test/tiny", "--timeout", "600"],
            env=env,
            capture_output=True,
            text=True,
            timeout=660,
        )
        assert waited.returncode == 0, waited.stdout + waited.stderr
        status = httpx.get(f"http://127.0.0.1:{server_port}/v1/status", timeout=10).json()
        assert status["engine_pids"]["/sax/test/tiny"]
        tree = _tree(up.pid)
        assert len(tree) >= 4  # sax up, admin, model server, engine core
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=180)
        assert up.returncode == 0, output
        gone = wait_for(lambda: not running(tree), timeout_s=10)
        assert gone
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_sax_up_demo_fails_fast_with_the_reason(tmp_path: Path) -> None:
    """A demo model that cannot load ends `sax up --demo` at once, with the load's reason."""
    env = {**os.environ, "SAX_CACHE": "/dev/null/cache"}  # no model directory can be built
    started = time.monotonic()
    up = subprocess.run(
        [
            SAX,
            "up",
            "--demo",
            f"--sax_root={tmp_path / 'root'}",
            f"--fs_root={tmp_path / 'fs'}",
            f"--admin_port={free_port()}",
            f"--server_port={free_port()}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = up.stdout + up.stderr
    assert up.returncode == 1, output
    assert "failed to load" in output and "/dev/null/cache" in output, output
    assert "The demo failed" in output
    assert time.monotonic() - started < 300
