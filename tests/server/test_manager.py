"""ModelServer lifecycle driven through `apply`, without HTTP."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from sax.errors import Code, SaxError
from sax.generation import SamplingOptions
from sax.schemas import ReplicaStatus
from sax.server.manager import ModelServer
from tests.server.harness import CELL, assign, options

LOADING, LOADED, FAILED, UNLOADING = (
    ReplicaStatus.LOADING,
    ReplicaStatus.LOADED,
    ReplicaStatus.FAILED,
    ReplicaStatus.UNLOADING,
)


def report(server: ModelServer, name: str) -> dict[str, object]:
    (r,) = [r for r in server.reports() if r.model_id == f"{CELL}/{name}"]
    return {"status": r.status, "reason": r.failure_reason}


async def test_load_goes_loading_then_loaded_and_notifies() -> None:
    server = ModelServer(options())
    seen: list[ReplicaStatus | None] = []
    server.add_listener(lambda: seen.append(server.status(f"{CELL}/m")))
    await server.apply([assign("m", overrides={"load_delay_s": 0.2})])
    assert report(server, "m")["status"] is LOADING
    with pytest.raises(SaxError) as err:
        server.loaded("m")
    assert err.value.code is Code.NOT_FOUND and "still loading" in err.value.message
    await server.settle(5)
    assert report(server, "m")["status"] is LOADED
    assert seen == [LOADING, LOADED]
    samples = await server.loaded("m").servable.generate("hi there", SamplingOptions())
    assert samples[0].text == "hi there"
    assert server.loaded(f"{CELL}/m") is server.loaded("m")
    await server.shutdown()


async def test_failed_load_reports_the_reason() -> None:
    server = ModelServer(options())
    await server.apply([assign("bad", "sax.models.test.FailToLoad")])
    await server.settle(5)
    r = report(server, "bad")
    assert r["status"] is FAILED
    assert "FailToLoad always fails to load" in str(r["reason"])
    with pytest.raises(SaxError) as err:
        server.loaded("bad")
    assert err.value.code is Code.NOT_FOUND and "FailToLoad always fails" in err.value.message
    # The same spec again does not hot-loop; dropping it forgets the failure.
    version = server.version
    await server.apply([assign("bad", "sax.models.test.FailToLoad")])
    assert server.version == version
    await server.apply([])
    await server.settle(5)
    assert server.reports() == []


async def test_bad_override_and_unknown_path_fail_with_clear_reasons() -> None:
    server = ModelServer(options())
    await server.apply(
        [
            assign("typo", overrides={"reply_dealy_s": 1.0}),
            assign("wrongtype", overrides={"reply_delay_s": "slow"}),
            assign("nopath", "os.system"),
            assign("placed", overrides={"ram": 123, "constraints": "x"}),
        ]
    )
    await server.settle(5)
    assert report(server, "typo")["status"] is FAILED
    assert "reply_dealy_s" in str(report(server, "typo")["reason"])
    assert "reply_delay_s" in str(report(server, "wrongtype")["reason"])
    assert "not a registered servable" in str(report(server, "nopath")["reason"])
    assert report(server, "placed")["status"] is LOADED  # placement keys are the admin's
    await server.shutdown()


async def test_unload_and_reload_on_spec_change() -> None:
    server = ModelServer(options())
    await server.apply([assign("m"), assign("n")])
    await server.settle(5)
    first = server.loaded("m").servable
    # ACL change applies in place; uuid change reloads; n is dropped.
    await server.apply([assign("m", acls={"lm.generate": "alice"})])
    assert report(server, "n")["status"] is UNLOADING
    await server.settle(5)
    assert [r.model_id for r in server.reports()] == [f"{CELL}/m"]
    assert server.loaded("m").servable is first
    assert server.loaded("m").spec.acls == {"lm.generate": "alice"}
    await server.apply([assign("m", uuid="u2")])
    assert report(server, "m")["status"] is LOADING
    await server.settle(5)
    assert server.loaded("m").servable is not first
    assert server.loaded("m").spec.uuid == "u2"
    with pytest.raises(SaxError) as err:
        server.loaded("n")
    assert err.value.code is Code.NOT_FOUND and "not loaded on this server" in err.value.message
    await server.shutdown()
    assert server.reports() == []


async def test_unassigning_a_loading_model_cancels_its_load() -> None:
    server = ModelServer(options())
    await server.apply([assign("slow", overrides={"load_delay_s": 5.0})])
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await server.apply([])
    await server.settle(5)
    assert time.monotonic() - start < 1.0
    assert server.reports() == []


async def test_loads_are_bounded_and_do_not_block_serving() -> None:
    server = ModelServer(options(max_concurrent_loads=1))
    await server.apply([assign("ready")])
    await server.settle(5)
    slow = {"load_delay_s": 0.3}
    start = time.monotonic()
    await server.apply([assign("ready"), *(assign(f"s{i}", overrides=slow) for i in range(3))])
    # While three loads queue behind one slot, the loaded model keeps serving.
    samples = await server.loaded("ready").servable.generate("still here", SamplingOptions())
    assert samples[0].text == "still here"
    await asyncio.sleep(0.45)
    statuses = [report(server, f"s{i}")["status"] for i in range(3)]
    assert statuses.count(LOADED) == 1, statuses
    await server.settle(5)
    assert time.monotonic() - start >= 0.85  # 3 x 0.3 s, one at a time
    assert all(report(server, f"s{i}")["status"] is LOADED for i in range(3))
    await server.shutdown()


async def test_unload_waits_for_admitted_requests() -> None:
    server = ModelServer(options())
    await server.apply([assign("m", overrides={"reply_delay_s": 0.3})])
    await server.settle(5)
    model = server.loaded("m")
    gate, engine = model.gate("lm.generate"), model.servable
    call = asyncio.create_task(gate.run(partial(engine.generate, "bye", SamplingOptions()), 5))
    await asyncio.sleep(0.05)
    await server.apply([])
    with pytest.raises(SaxError) as err:
        server.loaded("m")  # new requests go elsewhere at once
    assert "unloading" in err.value.message
    await asyncio.sleep(0.1)
    assert report(server, "m")["status"] is UNLOADING  # still draining the admitted call
    assert (await call)[0].text == "bye"
    await server.settle(5)
    assert server.reports() == []
