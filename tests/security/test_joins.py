"""Joins that cannot lie: the issue's forged join, takeovers, and reports of unassigned models.

The admin app runs on a real uvicorn on loopback with auth on (a config in ``memory://``); the
cell's state is then checked directly: what WatchLoc advertises, where the replica is placed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sax.admin.cell import Cell
from sax.admin_app import create_app
from sax.auth.directory import token_digest
from sax.auth.principals import add_token
from sax.auth.source import AuthSource
from sax.naming import CellId
from sax.schemas import CellConfig, CellState
from sax.store import CellStore
from tests.helpers import serving_app

ECHO = "sax.models.test.Echo"
M = "/sax/test/smollm"
REAL = "127.0.0.1:7001"


class Disk:
    async def __call__(self, state: CellState) -> None:
        self.state = state


@dataclass
class Admin:
    http: httpx.AsyncClient
    cell: Cell
    tokens: dict[str, str]

    def auth(self, who: str | None) -> dict[str, str]:
        token = "sax_forged" if who == "bad" else self.tokens.get(who or "", "")
        return {"authorization": f"Bearer {token}"} if token else {}

    async def join(self, body: dict[str, Any], who: str | None) -> httpx.Response:
        return await self.http.post("/v1/servers:join", json=body, headers=self.auth(who))

    async def locations(self) -> list[str]:
        r = await self.http.get("/v1/models/smollm/locations", params={"timeout_s": 0.01})
        return sorted(r.json()["values"])


@asynccontextmanager
async def secured_admin(**kw: Any) -> AsyncIterator[Admin]:
    """An admin with auth on: `admin` and `server`/`server2` in the admin ACL, `bob` in none."""
    root = f"memory://joins-{uuid.uuid4().hex[:12]}"
    config = CellConfig(fs_root=f"{root}/fs", admin_acl="admins")
    tokens = {}
    for name, groups in (("admin", ["admins"]), ("server", ["admins"]), ("server2", ["admins"])):
        config, tokens[name] = add_token(config, name, groups)
    config, tokens["bob"] = add_token(config, "bob", [])
    CellStore(root, CellId("test")).create(config)
    kw.setdefault("join_poll_timeout_s", 0.3)
    cell = Cell(CellId("test"), "admin-1", Disk(), **kw)
    auth = AuthSource(CellStore(root, CellId("test")))
    async with serving_app(create_app(cell, auth)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Admin(http, cell, tokens)


def join_body(address: str, *models: dict[str, Any], data_address: str = "") -> dict[str, Any]:
    return {
        "address": address,
        "data_address": data_address or address,
        "servable_model_paths": [ECHO],
        "models": list(models),
        "admin_id": "admin-1",
    }


def report(status: str = "LOADED", uuid_: str = "") -> dict[str, Any]:
    return {"model_id": M, "model_path": ECHO, "status": status, "uuid": uuid_}


async def with_real_replica(admin: Admin) -> str:
    """Publishes the model and has the real server load it; returns the published uuid."""
    r = await admin.http.post(
        "/v1/models",
        json={"model_id": M, "model_path": ECHO, "num_replicas": 1},
        headers=admin.auth("admin"),
    )
    assert r.status_code == 201, r.text
    r = await admin.join(join_body(REAL), "server")
    assert [a["model_id"] for a in r.json()["assignment"]] == [M]
    published = r.json()["assignment"][0]["uuid"]
    r = await admin.join(join_body(REAL, report("LOADED", published)), "server")
    assert r.status_code == 200
    assert await admin.locations() == [REAL]
    return str(published)


async def joined(admin: Admin) -> list[tuple[str, str, list[Any]]]:
    found = (await admin.http.get("/v1/servers")).json()["servers"]
    return [(s["address"], s["data_address"], s["models"]) for s in found]


def placed(admin: Admin) -> list[str]:
    return sorted(admin.cell.placer.placement.replicas.get(M, ()))


async def test_the_forged_join_is_refused_and_changes_nothing() -> None:
    async with secured_admin() as admin:
        await with_real_replica(admin)
        forged = join_body("127.0.0.1:1", report("LOADED"))
        servers_before = await joined(admin)
        for who, status in ((None, 401), ("bad", 401), ("bob", 403)):
            r = await admin.join(forged, who)
            assert r.status_code == status, r.text
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            else:
                assert "join" in r.json()["error"]["message"] and "admins" in r.text
        assert await joined(admin) == servers_before
        assert await admin.locations() == [REAL] and placed(admin) == [REAL]

        # Authenticated, but reporting a model the admin never assigned to it: ignored.
        r = await admin.join(forged, "server2")
        assert r.status_code == 200 and r.json()["assignment"] == []
        await admin.cell.placed()
        assert await admin.locations() == [REAL] and placed(admin) == [REAL]
        info = (await admin.http.get("/v1/models/smollm")).json()
        assert [r["server"] for r in info["replicas"]] == [REAL] and info["ready_replicas"] == 1
        # The servers list never shows the uuid a forger would need.
        servers = (await admin.http.get("/v1/servers")).json()["servers"]
        assert all(m["uuid"] == "" for s in servers for m in s["models"])


async def test_a_report_with_the_right_uuid_from_an_unassigned_server_is_ignored() -> None:
    async with secured_admin(adopt_window_s=0.0) as admin:
        published = await with_real_replica(admin)
        r = await admin.join(join_body("127.0.0.1:2", report("LOADED", published)), "server2")
        assert r.status_code == 200 and r.json()["assignment"] == []
        await admin.cell.placed()
        assert await admin.locations() == [REAL] and placed(admin) == [REAL]
        # Scaling up places the second replica there; only then does its report count.
        r = await admin.http.patch(
            "/v1/models/smollm", json={"num_replicas": 2}, headers=admin.auth("admin")
        )
        assert r.status_code == 200
        r = await admin.join(join_body("127.0.0.1:2", report("LOADED", published)), "server2")
        assert [a["model_id"] for a in r.json()["assignment"]] == [M]
        assert await admin.locations() == ["127.0.0.1:2", REAL]


async def test_one_server_cannot_take_over_another_s_session() -> None:
    async with secured_admin() as admin:
        published = await with_real_replica(admin)
        takeover = join_body(REAL, report("LOADED", published), data_address="127.0.0.1:9")
        r = await admin.join(join_body(REAL, report("LOADED", published)), "server2")
        assert r.status_code == 403 and "take over" in r.json()["error"]["message"]
        r = await admin.join(takeover, "server")  # same principal, new data address
        assert r.status_code == 412 and "127.0.0.1:9" in r.json()["error"]["message"]
        assert await admin.locations() == [REAL] and placed(admin) == [REAL]
        session = admin.cell.fleet.get(REAL)
        assert session is not None
        assert session.data_address == REAL and session.principal == "server"


async def test_a_restarted_admin_adopts_what_servers_hold_only_at_first() -> None:
    async with secured_admin() as first:
        published = await with_real_replica(first)
        state = first.cell.published.state()
    restarted = Cell(CellId("test"), "admin-2", Disk(), join_poll_timeout_s=0.3)
    restarted.restore(state)
    await restarted.start()
    try:
        from sax.schemas import JoinRequest, ModelReport

        held = ModelReport(model_id=M, model_path=ECHO, status="LOADED", uuid=published)
        request = JoinRequest(address=REAL, servable_model_paths=[ECHO], models=[held])
        reply = await restarted.join(request)
        assert [a.model_id for a in reply.assignment] == [M]
        watched = await restarted.watch("smollm", "", 0, 0.01)
        assert watched.values == [REAL]  # ready at once: nothing reloads
    finally:
        await restarted.stop()


async def test_status_page_shows_acls_and_groups_never_tokens() -> None:
    async with secured_admin() as admin:
        await with_real_replica(admin)
        r = await admin.http.patch(
            "/v1/models/smollm",
            json={"admin_acl": "owners", "acls": {"lm.generate": "readers"}},
            headers=admin.auth("admin"),
        )
        assert r.status_code == 200
        page = (await admin.http.get("/")).text
        assert "auth on" in page and "admins" in page and "owners" in page
        assert "lm.generate: readers" in page and "server2" in page and "bob" in page
        for token in admin.tokens.values():
            assert token not in page and token_digest(token) not in page


async def test_an_internal_error_is_logged_with_a_request_id_and_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(Cell(CellId("test"), "admin-1", Disk()))

    async def broken() -> None:
        raise RuntimeError("secret detail of the failure")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        r = await http.get("/broken")
    assert r.status_code == 500 and "secret" not in r.text
    message = r.json()["error"]["message"]
    request_id = message.rsplit(" ", 1)[-1]
    assert "request id" in message and len(request_id) == 16
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1])  # type: ignore[index]
