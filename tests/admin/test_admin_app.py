"""The admin HTTP API on a real uvicorn server on loopback: routes, errors, long polls, disconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sax.admin.cell import Cell
from sax.admin_app import create_app
from sax.naming import CellId
from sax.schemas import MAX_BODY_BYTES, CellState
from tests.helpers import serving_app

ECHO = "sax.models.test.Echo"
M = "/sax/test/m"
GOOD = {"model_id": M, "model_path": ECHO, "checkpoint_path": "None", "num_replicas": 1}


class Disk:
    def __init__(self) -> None:
        self.writes: list[CellState] = []

    async def __call__(self, state: CellState) -> None:
        self.writes.append(state)


@asynccontextmanager
async def serving(**kw: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Cell, Disk]]:
    """The app on 127.0.0.1:<free port> in this event loop, and a client for it."""
    disk = Disk()
    kw.setdefault("join_poll_timeout_s", 0.5)
    cell = Cell(CellId("test"), "admin-1", disk, **kw)
    async with serving_app(create_app(cell)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client, cell, disk


def join_body(addr: str, *models: dict[str, Any], admin_id: str = "admin-1") -> dict[str, Any]:
    return {
        "address": addr,
        "data_address": f"data-{addr}",
        "servable_model_paths": [ECHO],
        "admin_id": admin_id,
        "models": list(models),
    }


def loaded(cell: Cell, status: str = "LOADED") -> dict[str, Any]:
    return {
        "model_id": M,
        "model_path": ECHO,
        "uuid": cell.published.require(M).model.uuid,
        "status": status,
    }


def error(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


async def test_publish_get_update_unpublish_round_trip() -> None:
    async with serving() as (http, _, disk):
        r = await http.post("/v1/models", json=GOOD)
        assert r.status_code == 201 and r.json()["model_id"] == M and len(disk.writes) == 1
        assert (await http.get("/v1/models/m")).json()["num_replicas"] == 1
        r = await http.patch("/v1/models/m", json={"num_replicas": 3, "checkpoint_path": "/c/1"})
        assert r.status_code == 200 and r.json()["num_replicas"] == 3
        assert [m["model_id"] for m in (await http.get("/v1/models")).json()["models"]] == [M]
        assert (await http.delete("/v1/models/m")).status_code == 200
        assert error(await http.get("/v1/models/m"))[:2] == (404, "NOT_FOUND")
        assert (await http.post("/v1/models", json=GOOD)).status_code == 201  # republish at once


REJECTIONS: list[tuple[str, str, str, Any, int, str]] = [
    # method, path, what, body, status, substring of the message
    ("POST", "/v1/models", "unknown field", {**GOOD, "num_replica": 2}, 400, "num_replica"),
    ("POST", "/v1/models", "missing field", {"model_path": ECHO}, 400, "model_id"),
    ("POST", "/v1/models", "wrong type", {**GOOD, "num_replicas": "two"}, 400, "num_replicas"),
    ("POST", "/v1/models", "other cell", {**GOOD, "model_id": "/sax/x/m"}, 400, "/sax/test"),
    ("POST", "/v1/models", "bad name", {**GOOD, "model_id": "/sax/test/M!"}, 400, "must match"),
    ("POST", "/v1/models", "bad path", {**GOOD, "model_path": "a b"}, 400, "model_path"),
    ("POST", "/v1/models", "bad ckpt", {**GOOD, "checkpoint_path": "x$"}, 400, "checkpoint_path"),
    ("POST", "/v1/models", "negative", {**GOOD, "num_replicas": -1}, 400, "num_replicas"),
    ("POST", "/v1/models", "acl method", {**GOOD, "acls": {"lm.nope": ""}}, 400, "lm.nope"),
    ("POST", "/v1/models", "acl name", {**GOOD, "acls": {"lm.score": "a b"}}, 400, "ACL name"),
    ("POST", "/v1/models", "duplicate", {**GOOD, "num_replicas": 5}, 409, "already exists"),
    ("PATCH", "/v1/models/m", "path change", {"model_path": "a.B"}, 400, "model_path is immutable"),
    ("PATCH", "/v1/models/m", "unknown field", {"replicas": 2}, 400, "replicas"),
    ("PATCH", "/v1/models/m", "negative", {"num_replicas": -3}, 400, "num_replicas"),
    ("PATCH", "/v1/models/nope", "unknown model", {"num_replicas": 2}, 404, "/sax/test/nope"),
    ("DELETE", "/v1/models/nope", "unknown model", None, 404, "/sax/test/nope"),
    ("GET", "/v1/models/Bad", "bad name", None, 400, "must match"),
    ("GET", "/v1/models/m/locations?seqno=-1", "negative seqno", None, 400, "seqno"),
    ("POST", "/v1/models/nope:wait", "unknown model", {"num_replicas": 1}, 404, "nope"),
    ("POST", "/v1/models/m:wait", "bad timeout", {"timeout_s": 0}, 400, "timeout_s"),
    ("POST", "/v1/servers:join", "empty address", {"address": ""}, 400, "address"),
    ("POST", "/v1/servers:join", "unknown field", {"address": "a", "chips": 1}, 400, "chips"),
    ("GET", "/v1/nothing", "no route", None, 404, "no such route"),
]


@pytest.mark.parametrize(
    ("method", "path", "what", "body", "status", "needle"),
    REJECTIONS,
    ids=[f"{r[0]} {r[1]} {r[2]}" for r in REJECTIONS],
)
async def test_rejections_name_the_problem_and_change_nothing(
    method: str, path: str, what: str, body: Any, status: int, needle: str
) -> None:
    disk = Disk()
    app = create_app(Cell(CellId("test"), "admin-1", disk))
    transport = httpx.ASGITransport(app=app)  # plain request/response: no socket needed
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        await http.post("/v1/models", json=GOOD)
        before = (await http.get("/v1/models")).json()
        r = await http.request(method, path, json=body)
        code, _, message = error(r)
        assert code == status and needle in message, (what, r.text)
        assert (await http.get("/v1/models")).json() == before and len(disk.writes) == 1


async def test_malformed_and_oversized_bodies() -> None:
    async with serving() as (http, _, disk):
        headers = {"content-type": "application/json"}
        r = await http.post("/v1/models", content=b'{"model_id": ', headers=headers)
        assert error(r)[:2] == (400, "INVALID_ARGUMENT") and "malformed JSON" in error(r)[2]
        big = b'{"model_id": "' + b"x" * MAX_BODY_BYTES + b'"}'
        r = await http.post("/v1/models", content=big, headers=headers)
        assert r.status_code == 413 and "larger than" in error(r)[2]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        r = await http.post("/v1/models", content=chunks(), headers=headers)
        assert r.status_code == 413 and "larger than" in error(r)[2]
        assert disk.writes == []


async def test_colon_routes_and_wait_for_ready() -> None:
    async with serving() as (http, cell, _):
        await http.post("/v1/models", json=GOOD)
        r = await http.post("/v1/models/m:wait", json={"num_replicas": 1, "timeout_s": 0.1})
        assert error(r)[:2] == (504, "DEADLINE_EXCEEDED") and "no live server" in error(r)[2]
        r = await http.post("/v1/servers:join", json=join_body("s0", admin_id=""))
        assert [a["model_id"] for a in r.json()["assignment"]] == [M]
        waiting = asyncio.create_task(http.post("/v1/models/m:wait", json={"num_replicas": 1}))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await http.post("/v1/servers:join", json=join_body("s0", loaded(cell)))
        r = await asyncio.wait_for(waiting, 2)
        assert r.status_code == 200 and r.json() == {"ready_replicas": 1}
        # An empty body waits for one replica with the default timeout.
        assert (await http.post("/v1/models/m:wait")).json() == {"ready_replicas": 1}
        waiting = asyncio.create_task(http.post("/v1/models/m:wait", json={"num_replicas": 2}))
        await asyncio.sleep(0.05)
        await http.delete("/v1/models/m")
        assert error(await asyncio.wait_for(waiting, 2))[:2] == (499, "CANCELLED")


async def test_watch_long_poll_over_http() -> None:
    async with serving(watch_timeout_s=5) as (http, cell, _):
        await http.post("/v1/models", json=GOOD)
        first = (await http.get("/v1/models/m/locations")).json()
        assert first == {
            "admin_id": "admin-1",
            "next_seqno": 0,
            "has_fullset": True,
            "values": [],
            "changelog": [],
        }
        params: dict[str, str | int | float] = {"admin_id": "admin-1", "seqno": 0}
        started = time.monotonic()
        r = await http.get("/v1/models/m/locations", params={**params, "timeout_s": 0.2})
        assert r.json()["next_seqno"] == 0 and r.json()["changelog"] == []
        assert 0.15 < time.monotonic() - started < 2
        poll = asyncio.create_task(http.get("/v1/models/m/locations", params=params))
        await http.post("/v1/servers:join", json=join_body("s0", admin_id=""))
        await asyncio.sleep(0.05)
        assert not poll.done()  # assigned is not ready
        await http.post("/v1/servers:join", json=join_body("s0", loaded(cell)))
        r = (await asyncio.wait_for(poll, 2)).json()
        assert r["next_seqno"] == 1 and r["changelog"] == [{"op": "add", "address": "data-s0"}]


async def test_join_is_held_then_answered_on_change() -> None:
    async with serving(join_poll_timeout_s=5) as (http, _, _disk):
        r = await http.post("/v1/servers:join", json=join_body("s0", admin_id=""))
        assert r.json() == {"admin_id": "admin-1", "assignment": []}
        held = asyncio.create_task(http.post("/v1/servers:join", json=join_body("s0")))
        await asyncio.sleep(0.1)
        assert not held.done()
        await http.post("/v1/models", json=GOOD)
        r = await asyncio.wait_for(held, 2)  # long before the 5 s poll ends
        assert [a["model_id"] for a in r.json()["assignment"]] == [M]


async def test_a_dropped_join_connection_is_noticed_within_a_second() -> None:
    async with serving(join_poll_timeout_s=30, disconnect_grace_s=0.3) as (http, cell, _):
        await http.post("/v1/models", json=GOOD)
        await http.post("/v1/servers:join", json=join_body("s0", admin_id=""))
        url = str(http.base_url.join("/v1/servers:join"))
        async with httpx.AsyncClient() as crashing:
            held = asyncio.create_task(crashing.post(url, json=join_body("s0", loaded(cell))))
            await asyncio.sleep(0.2)
            assert (await http.get("/v1/models/m")).json()["ready_replicas"] == 1
            held.cancel()  # the client goes away mid-poll, as a crash would
        closed_at = time.monotonic()
        while [s["address"] for s in (await http.get("/v1/servers")).json()["servers"]]:
            assert time.monotonic() - closed_at < 1.5, "dead server still listed"
            await asyncio.sleep(0.05)
        info = (await http.get("/v1/models/m")).json()
        assert info["ready_replicas"] == 0 and "no live server serves" in info["reason"]


async def test_status_page_health_metrics_and_docs() -> None:
    async with serving() as (http, cell, _):
        await http.post("/v1/models", json={**GOOD, "num_replicas": 2})
        await http.post("/v1/servers:join", json=join_body("s0", admin_id=""))
        await http.post("/v1/servers:join", json=join_body("s0", loaded(cell)))
        page = (await http.get("/")).text
        assert "/sax/test Cell Status" in page and M in page and "s0" in page
        assert "1 of 2 replicas ready" in page and "no other live server serves" in page
        assert (await http.get("/healthz")).json()["status"] == "ok"
        metrics = (await http.get("/metrics")).text
        assert "sax_admin_models 1.0" in metrics and "sax_admin_servers 1.0" in metrics
        assert 'sax_admin_replicas{status="LOADED"} 1.0' in metrics
        assert "sax_admin_publish_to_assignment_seconds_count 1.0" in metrics
        assert "swagger-ui" in (await http.get("/docs")).text
        spec = (await http.get("/openapi.json")).json()
        assert "/v1/models/{name}:wait" in spec["paths"] and "/v1/servers:join" in spec["paths"]
        stats = (await http.get("/v1/stats")).json()
        assert stats["num_servers"] == 1 and stats["servers_by_model_path"] == {ECHO: 1}
