"""End to end with real processes: ``sax admin-config`` / ``admin-server`` / ``model-server`` on a
tmp sax_root, the seed walkthrough through the real ``saxutil`` binary, and client failover when
a model server is SIGKILLed mid-traffic (issue 3)."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sax import client
from tests.cell import RealCell
from tests.helpers import wait_for

QUESTION = "Who is Harry Potter's mother?"


@pytest.fixture
def real_cell(tmp_path: Path) -> Iterator[RealCell]:
    with RealCell(tmp_path) as cell:
        yield cell


def test_seed_walkthrough_with_saxutil(real_cell: RealCell) -> None:
    _, address = real_cell.model_server()
    run = real_cell.saxutil("publish", "/sax/test/echo", "sax.models.test.Echo", "None", "1")
    assert run.returncode == 0, run.stderr
    run = real_cell.saxutil("wait", "/sax/test/echo", "--timeout=30s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ready (1/1 replicas)" in run.stdout

    run = real_cell.saxutil("ls", "/sax/test/echo")
    assert run.returncode == 0, run.stderr
    row = [c.strip() for c in run.stdout.splitlines()[3].split("|")[1:-1]]
    assert row[:5] == ["echo", "sax.models.test.Echo", "None", "1", address]
    info = json.loads(real_cell.saxutil("ls", "/sax/test/echo", "--json").stdout)
    assert (info["num_replicas"], info["ready_replicas"]) == (1, 1)
    assert info["replicas"][0]["address"] == address
    assert info["replicas"][0]["status"] == "LOADED"

    run = real_cell.saxutil("lm.generate", "/sax/test/echo", QUESTION)
    assert run.returncode == 0, run.stderr
    assert [c.strip() for c in run.stdout.splitlines()[3].split("|")[1:-1]] == [QUESTION, "0"]
    run = real_cell.saxutil("lm.generate", "-stream", "/sax/test/echo", QUESTION)
    assert run.stdout == f"{QUESTION}\nScores: 0\n", run.stderr

    run = real_cell.saxutil("publish", "/sax/test/echo", "sax.models.test.Echo", "None", "1")
    assert run.returncode == 1
    assert run.stderr.startswith("Error: Failed to publish model: ALREADY_EXISTS: ")

    assert real_cell.saxutil("unpublish", "/sax/test/echo").returncode == 0
    run = real_cell.saxutil("ls", "/sax/test")
    assert run.returncode == 0 and "echo" not in run.stdout
    run = real_cell.saxutil("lm.generate", "/sax/test/echo", QUESTION)
    assert run.returncode == 1 and "NOT_FOUND" in run.stderr


def _load(
    m: client.Model, stop: threading.Event, ok: list[int], errors: list[BaseException]
) -> Callable[[], None]:
    def loop() -> None:
        while not stop.is_set():
            try:
                assert m.lm.generate("ping", timeout=30) == [("ping", 0.0)]
                ok.append(1)
            except BaseException as exc:
                errors.append(exc)

    return loop


def test_sigkilled_model_server_fails_no_request(real_cell: RealCell) -> None:
    victim, victim_address = real_cell.model_server()
    _, survivor_address = real_cell.model_server()
    root = real_cell.sax_root
    # A 10 ms reply keeps requests in flight on the victim when it dies: they must be retried.
    client.publish(
        "/sax/test/echo", "sax.models.test.Echo", "None", 2, {"reply_delay_s": 0.01}, sax_root=root
    )
    assert client.wait_for_ready("/sax/test/echo", 2, timeout=30, sax_root=root) == 2
    m = client.Model("/sax/test/echo", sax_root=root)
    wait_for(lambda: len(m.replicas()) == 2, timeout_s=10)

    stop = threading.Event()
    ok: list[int] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_load(m, stop, ok, errors)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(ok) >= 100, timeout_s=20)
        victim.signal(signal.SIGKILL)
        killed_at = len(ok)
        # The admin notices the crash and the client's watcher drops the dead replica.
        wait_for(lambda: m.replicas() == (survivor_address,), timeout_s=15)
        wait_for(lambda: len(ok) >= killed_at + 100, timeout_s=20)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert victim_address not in m.replicas()
    info = client.list("/sax/test/echo", sax_root=root)
    assert [r.address for r in info.replicas if r.status == "LOADED"] == [survivor_address]
