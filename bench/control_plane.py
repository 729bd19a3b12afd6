"""Control-plane benchmark: one admin `Cell` holding 1,000 servers and 1,000 models.

Prints one JSON line:
- ``publish_to_assignment_ms``: from a publish call to the placement that assigns the model a
  server (p50/p99, publishes in bursts of 50 while 1,000 servers are joined);
- ``join_ms``: a join's handling time through `Cell.join` (no hold) while every server
  re-joins at ``join_rate_per_s`` (p50/p99);
- ``join_http_ms``: the same join through the real HTTP app (in-process uvicorn on loopback,
  one keep-alive client, sequential), i.e. including JSON and HTTP parsing;
- ``dead_to_replaced_ms``: a server's held join connection closes -> its replica is placed
  elsewhere and a WatchLoc watcher has seen the address go (DESIGN target: <= 2 s);
- ``rss_mb``: the process's resident memory with all of the above loaded.

Then the same with real processes (``real_processes``): ``sax admin-server`` with its default
TTLs and 3 ``sax model-server`` processes serving ``sax.models.test.Echo`` (no load delay) on
a temp sax_root, one replica published, and a WatchLoc watcher (the client's loop):
- ``crash_ms``: SIGKILL the server holding the replica -> the watcher has seen its address go
  (``gone``) and the replica's new address, which WatchLoc lists only once it is LOADED
  there (``replaced``); ``crashes`` runs, the killed server restarted as the next spare;
- ``silent_ms``: the same after SIGSTOP (a silent partition: only the server TTL tells).

Targets (DESIGN section 10): publish->assignment <= 100 ms, join p99 <= 50 ms, crash ->
replaced <= 2 s, silent -> replaced <= 12 s (plus load time, ~0 for Echo).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from sax import client
from sax.admin.cell import Cell
from sax.admin_app import create_app
from sax.naming import CellId
from sax.schemas import CellState, JoinRequest, ModelReport, PublishRequest, ReplicaStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the real-process cell of tests/
from tests.cell import CELL, LocationLog, RealCell
from tests.helpers import Proc

N_SERVERS = 1000
N_MODELS = 1000
BURST = 50
JOIN_RATE_PER_S = 1000  # each server every second: 5x the production re-poll rate
JOIN_SECONDS = 3
ECHO = "sax.models.test.Echo"
CRASHES = 3
SERVER_TTL_S = 10.0  # the admin-server default, which the real-process figures run with


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(statistics.median(ms), 3),
        "p99": round(pct(ms, 99), 3),
        "max": round(max(ms), 3),
        "n": len(ms),
    }


def join_request(cell: Cell, i: int, admin_id: str = "bench") -> JoinRequest:
    addr = f"10.0.{i // 250}.{i % 250}:10001"
    models = []
    session = cell.fleet.get(addr)
    for a in session.desired if session is not None else ():
        models.append(
            ModelReport(
                model_id=a.model_id, model_path=ECHO, uuid=a.uuid, status=ReplicaStatus.LOADED
            )
        )
    return JoinRequest(
        address=addr,
        data_address=addr,
        servable_model_paths=[ECHO],
        memory_bytes=64 << 30,
        servable_memory_bytes={ECHO: 1 << 30},
        models=models,
        admin_id=admin_id,
    )


async def main() -> dict[str, Any]:
    async def persist(_: CellState) -> None:
        return None

    cell = Cell(CellId("bench"), "bench", persist, join_poll_timeout_s=0.0)
    await cell.start()

    # 1,000 servers join (first joins, answered once placement has seen them).
    await asyncio.gather(*(cell.join(join_request(cell, i, admin_id="")) for i in range(N_SERVERS)))

    # 1,000 publishes in bursts; latency until the placement that assigns each.
    publish: list[float] = []

    async def publish_one(j: int) -> None:
        started = time.perf_counter()
        req = PublishRequest(
            model_id=f"/sax/bench/m{j:04d}", model_path=ECHO, checkpoint_path="None", num_replicas=1
        )
        await cell.publish(req)
        await cell.placed()
        assert cell.placer.placement.replicas.get(req.model_id), req.model_id
        publish.append(time.perf_counter() - started)

    for start in range(0, N_MODELS, BURST):
        await asyncio.gather(*(publish_one(j) for j in range(start, start + BURST)))

    # Steady state: every server re-joins (reporting its model LOADED) at a fixed rate.
    joins: list[float] = []

    async def timed_join(i: int) -> None:
        started = time.perf_counter()
        await cell.join(join_request(cell, i))
        joins.append(time.perf_counter() - started)

    tasks = []
    interval = 1.0 / JOIN_RATE_PER_S
    t0 = time.perf_counter()
    for k in range(JOIN_RATE_PER_S * JOIN_SECONDS):
        delay = t0 + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed_join(k % N_SERVERS)))
    await asyncio.gather(*tasks)
    ready = sum(1 for m in (await cell.list()).models if m.ready_replicas == 1)

    # The same join through the real HTTP app.
    http_joins: list[float] = []
    server = uvicorn.Server(
        uvicorn.Config(create_app(cell), host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for k in range(300):
            body = join_request(cell, k % N_SERVERS).model_dump(mode="json")
            started = time.perf_counter()
            r = await http.post("/v1/servers:join", json=body)
            http_joins.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
    server.should_exit = True
    await serving

    # A crash: the held join of the server holding m0000 closes; time until it is re-placed
    # and a watcher has seen its address go.
    cell.fleet.join_poll_timeout_s = 30.0
    victim = cell.placer.placement.replicas["/sax/bench/m0000"][0]
    index = next(i for i in range(N_SERVERS) if join_request(cell, i).address == victim)
    seen = await cell.watch("m0000", "", 0)
    closed = asyncio.Event()
    held = asyncio.create_task(cell.join(join_request(cell, index), closed.wait))
    await asyncio.sleep(0.05)
    crashed = time.perf_counter()
    closed.set()
    change = await cell.watch("m0000", "bench", seen.next_seqno, timeout_s=10)
    dead_to_replaced = time.perf_counter() - crashed
    # The placement run that removed the address also re-placed the replica.
    assert cell.placer.placement.replicas["/sax/bench/m0000"] not in ((), (victim,))
    assert [m.op for m in change.changelog] == ["del"], change
    held.cancel()

    rss = psutil.Process().memory_info().rss / (1 << 20)
    await cell.stop()
    return {
        "bench": "control_plane",
        "servers": N_SERVERS,
        "models": N_MODELS,
        "ready_models": ready,
        "publish_to_assignment_ms": summary(publish),
        "join_ms": {**summary(joins), "rate_per_s": JOIN_RATE_PER_S},
        "join_http_ms": summary(http_joins),
        "dead_to_replaced_ms": round(dead_to_replaced * 1000, 1),
        "disconnect_grace_ms": cell.fleet.disconnect_grace_s * 1000,
        "rss_mb": round(rss, 1),
        "targets": {
            "publish_to_assignment_ms": 100,
            "join_p99_ms": 50,
            "dead_to_replaced_ms": 2000,
            "crash_replaced_ms": 2000,
            "silent_replaced_ms": 12000,
        },
    }


def displace(log: LocationLog, servers: dict[str, Proc], sig: int) -> tuple[float, float, str]:
    """Sends `sig` to the server the watcher lists for the model; returns the seconds until the
    watcher saw its address go and saw another one, and the victim's address."""
    log.wait(lambda seen: len(seen) == 1, timeout_s=30)
    (victim,) = log.addresses
    servers[victim].signal(sig)
    sent = time.monotonic()
    gone = log.wait(lambda seen: victim not in seen, since=sent, timeout_s=30)
    replaced = log.wait(
        lambda seen: len(seen) == 1 and victim not in seen, since=sent, timeout_s=30
    )
    return gone - sent, replaced - sent, victim


def real_processes() -> dict[str, Any]:
    crash_gone: list[float] = []
    crash_replaced: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sax-bench-") as tmp, RealCell(Path(tmp)) as cell:
        servers = {address: proc for proc, address in cell.model_servers(3)}
        model_id = f"{CELL}/echo"
        client.publish(model_id, ECHO, "None", 1, sax_root=cell.sax_root)
        log = LocationLog(cell.sax_root, model_id)
        for _ in range(CRASHES):
            gone, replaced, victim = displace(log, servers, signal.SIGKILL)
            crash_gone.append(gone)
            crash_replaced.append(replaced)
            servers[victim].p.wait(timeout=10)
            servers[victim], _ = cell.model_server(port=int(victim.rsplit(":", 1)[1]))
        silent_gone, silent_replaced, victim = displace(log, servers, signal.SIGSTOP)
        servers[victim].signal(signal.SIGCONT)
        log.stop()

    def ms(seconds: list[float]) -> list[float]:
        return [round(s * 1000, 1) for s in seconds]

    return {
        "real_processes": {"model_servers": 3, "server_ttl_s": SERVER_TTL_S},
        "crash_ms": {"gone": ms(crash_gone), "replaced": ms(crash_replaced)},
        "silent_ms": {"gone": ms([silent_gone])[0], "replaced": ms([silent_replaced])[0]},
    }


if __name__ == "__main__":
    figures = asyncio.run(main())
    figures.update(real_processes())
    print(json.dumps(figures))
