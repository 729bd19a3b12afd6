"""Supervised lifecycle without engines: load timeouts, bounded unloads, loops that survive errors.

The hanging loads are the deterministic test servables `sax.models.test.Echo` (``load_delay_s``:
a load that sleeps and can be cancelled) and `sax.models.test.HangingLoad` (a load whose thread
ignores cancellation until its unload releases it), named as such.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sax.admin import placer as placer_module
from sax.admin.cell import Cell
from sax.admin.fleet import Fleet
from sax.client.admin import AsyncAdminClient
from sax.client.locations import Watcher
from sax.naming import CellId, ModelId
from sax.schemas import JoinRequest, PublishRequest, ReplicaStatus
from sax.server import registry
from sax.server.manager import ModelServer
from tests.server.harness import CELL, ECHO, assign, options

HANG = "sax.models.test.HangingLoad"


def status(server: ModelServer, name: str) -> tuple[ReplicaStatus | None, str]:
    model = server.get(f"{CELL}/{name}")
    return (model.status, model.failure_reason) if model else (None, "")


async def test_a_load_past_its_timeout_fails_and_frees_its_slot() -> None:
    server = ModelServer(options(max_concurrent_loads=1))
    await server.apply([assign("slow", overrides={"load_delay_s": 1e9, "load_timeout_s": 0.5})])
    await server.wait_until(lambda: server.status(f"{CELL}/slow") is ReplicaStatus.FAILED, 30)
    assert status(server, "slow") == (ReplicaStatus.FAILED, "load timed out after 0.5 s")
    # The only load slot is free again: another model loads.
    await server.apply(
        [
            assign("slow", overrides={"load_delay_s": 1e9, "load_timeout_s": 0.5}),
            assign("next"),
        ]
    )
    await server.wait_until(lambda: server.status(f"{CELL}/next") is ReplicaStatus.LOADED, 30)
    await server.shutdown()


async def test_a_load_that_ignores_cancellation_times_out_and_is_freed() -> None:
    server = ModelServer(options(max_concurrent_loads=1, unload_timeout_s=0.5))
    await server.apply([assign("stuck", HANG, overrides={"load_timeout_s": 0.5})])
    await server.wait_until(lambda: server.status(f"{CELL}/stuck") is ReplicaStatus.FAILED, 30)
    assert status(server, "stuck")[1] == "load timed out after 0.5 s"
    replica = server.get(f"{CELL}/stuck")
    assert replica is not None and replica.built is None  # its unload ran (and released it)
    await server.apply([assign("stuck", HANG, overrides={"load_timeout_s": 0.5}), assign("e")])
    await server.wait_until(lambda: server.status(f"{CELL}/e") is ReplicaStatus.LOADED, 30)
    await server.shutdown()


async def test_unloading_a_hanging_load_is_bounded_and_the_id_loads_again() -> None:
    server = ModelServer(options(unload_timeout_s=0.5))
    await server.apply([assign("m", HANG)])  # the default load timeout: 900 s
    model = server.get(f"{CELL}/m")
    assert model is not None and model.status is ReplicaStatus.LOADING
    started = time.monotonic()
    await server.apply([])
    await server.settle(30)
    assert server.get(f"{CELL}/m") is None
    assert time.monotonic() - started < 30
    # The id is not wedged: the same id with another servable loads.
    await server.apply([assign("m", uuid="u2")])
    await server.wait_until(lambda: server.status(f"{CELL}/m") is ReplicaStatus.LOADED, 30)
    await server.shutdown()


def test_an_unknown_backend_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry is process-wide: keep this test's choice of backends to itself.
    monkeypatch.setattr(registry, "_failed", {})
    monkeypatch.setattr(registry, "_enabled", None)
    errors = registry.prepare_backends({"test", "nosuch"})
    assert errors == {"nosuch": "unknown backend"}
    assert "sax.models.test.Echo" in registry.servable_paths({"test"})


async def test_readiness_says_what_is_true() -> None:
    server = ModelServer(options())
    server.backend_errors = {"jax": "ImportError: broken"}
    probe = server.readiness(time.monotonic(), None, 15)
    assert probe.status == "unavailable" and probe.checks["admin"] == "not joined yet"
    assert probe.checks["backend jax"] == "ImportError: broken"
    now = time.monotonic()
    assert server.readiness(now, now, 15).status == "ok"
    await server.apply([assign("bad", "sax.models.test.FailToLoad")])
    await server.settle(10)
    probe = server.readiness(now, now, 15)
    assert probe.status == "unavailable" and "FAILED" in probe.checks["models"]
    server.draining = True
    await server.apply([])
    await server.settle(10)
    assert server.readiness(now, now, 15).checks["draining"] == "leaving the cell"
    assert server.liveness().status == "ok"
    await server.shutdown()


# ---------------------------------------------------------------- admin loops


def _join(address: str) -> JoinRequest:
    return JoinRequest(address=address, servable_model_paths=[ECHO], memory_bytes=0)


async def _cell() -> Cell:
    async def persist(state: object) -> None:
        return None

    cell = Cell(CellId.parse(CELL), "admin-1", persist, server_ttl_s=0.5)  # type: ignore[arg-type]
    await cell.start()
    return cell


async def test_the_placer_survives_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = await _cell()
    real = placer_module.place
    calls = {"n": 0, "failed": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if not calls["failed"]:
            calls["failed"] = 1
            raise RuntimeError("injected placement failure")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    await cell.join(_join("127.0.0.1:1"))
    await cell.placed()
    # The publish's placement fails, and no later event comes: only a retry places it.
    monkeypatch.setattr(placer_module, "place", flaky)
    await cell.publish(PublishRequest(model_id=f"{CELL}/m", model_path=ECHO, num_replicas=1))
    deadline = time.monotonic() + 10
    while not [r for r in (await cell.get("m")).replicas if r.server == "127.0.0.1:1"]:
        assert time.monotonic() < deadline, "placement never recovered"
        await asyncio.sleep(0.02)
    assert calls["n"] >= 2
    assert cell.liveness().status == "ok"
    await cell.stop()


async def test_the_reaper_survives_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = await _cell()
    real = Fleet.reap
    calls = {"n": 0}

    def flaky(self: Fleet, now: float) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected reaper failure")
        return real(self, now)

    monkeypatch.setattr(Fleet, "reap", flaky)
    await cell.join(_join("127.0.0.1:2"))
    # Silent past the TTL: the reaper, still running after its failure, declares it dead.
    deadline = time.monotonic() + 10
    while (await cell.servers()).servers:
        assert time.monotonic() < deadline, "the reaper stopped"
        await asyncio.sleep(0.05)
    assert calls["n"] >= 2
    await cell.stop()


class _FlakyAdmin(AsyncAdminClient):
    """A real admin client whose first request raises a non-SaxError (e.g. a storage error)."""

    def __init__(self) -> None:
        super().__init__("memory://flaky-admin", CellId.parse(CELL))
        self.calls = 0
        self.answered = asyncio.Event()

    async def request(self, method: str, path: str, **kw: object) -> object:  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            raise OSError("injected storage failure")
        if self.calls == 2:
            raise ValueError("a reply that is not JSON")
        if self.answered.is_set():
            await asyncio.sleep(30)  # nothing changed: the admin holds the poll
        self.answered.set()
        return {"admin_id": "a", "has_fullset": True, "values": ["h:1"], "next_seqno": 1}


async def test_the_client_watcher_survives_unexpected_errors() -> None:
    admin = _FlakyAdmin()
    watcher = Watcher(admin, ModelId.parse(f"{CELL}/m"))
    try:
        await asyncio.wait_for(admin.answered.wait(), 30)
        deadline = time.monotonic() + 10
        while watcher.replicas.addresses != ("h:1",):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert not watcher.done
    finally:
        watcher.stop()
