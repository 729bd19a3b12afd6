"""The one-shot blocking calls (`sax.client.direct`, saxutil's path) against the fake cell over
real HTTP: the same requests, retries, failover and errors as the asyncio client's."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from sax import client
from sax.client import direct, http
from sax.client.picker import PICKER
from sax.client.retry import Deadline
from sax.errors import Code, SaxError
from sax.naming import CellId
from tests.client.fakes import FakeAdmin, FakeCell, ServerThread, black_hole, point_cell_at


def test_admin_calls_match_the_clients(cell: FakeCell) -> None:
    root = cell.sax_root
    info = direct.publish(
        "/sax/test/new", "sax.models.test.Echo", "None", 2, {"k": 1}, sax_root=root
    )
    assert (info["model_id"], info["num_replicas"], info["overrides"]) == (
        "/sax/test/new",
        2,
        {"k": 1},
    )
    assert cell.admin.models["new"].model_path == "sax.models.test.Echo"
    with pytest.raises(SaxError) as dup:
        direct.publish("/sax/test/new", "sax.models.test.Echo", "None", 1, sax_root=root)
    assert dup.value.code == Code.ALREADY_EXISTS
    assert [m["model_id"] for m in direct.list_all("/sax/test", sax_root=root)] == [
        m.model_id for m in client.list_all("/sax/test", sax_root=root)
    ]
    assert direct.get("/sax/test/m", sax_root=root) == client.list(
        "/sax/test/m", sax_root=root
    ).model_dump(mode="json")
    direct.unpublish("/sax/test/new", sax_root=root)
    for call in (direct.get, direct.unpublish):
        with pytest.raises(SaxError) as gone:
            call("/sax/test/new", sax_root=root)
        assert gone.value.code == Code.NOT_FOUND


def test_publish_sends_the_clients_request_body(cell: FakeCell) -> None:
    """The body the admin receives is `PublishRequest`'s, field for field."""
    from sax.schemas import PublishRequest

    direct.publish(
        "/sax/test/p", "sax.models.test.Echo", "/ckpt", 3, {"x": [1.5]}, sax_root=cell.sax_root
    )
    sent = cell.admin.models["p"]
    expected = PublishRequest(
        model_id="/sax/test/p",
        model_path="sax.models.test.Echo",
        checkpoint_path="/ckpt",
        num_replicas=3,
        overrides={"x": [1.5]},
    )
    assert (sent.model_path, sent.checkpoint_path, sent.num_replicas, sent.overrides) == (
        expected.model_path,
        expected.checkpoint_path,
        expected.num_replicas,
        expected.overrides,
    )


def test_admin_503_is_retried_until_the_deadline_as_by_the_client(cell: FakeCell) -> None:
    cell.admin.unavailable = True
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        direct.get("/sax/test/m", sax_root=cell.sax_root, timeout=0.5)
    assert time.monotonic() - start >= 0.45
    assert len(cell.admin.requests) > 2  # it retried
    with pytest.raises(SaxError) as twin:
        client.list("/sax/test/m", sax_root=cell.sax_root, timeout=0.5)
    assert info.value.code == twin.value.code == Code.DEADLINE_EXCEEDED
    assert info.value.message == twin.value.message  # "...: deadline exceeded; last error: ..."


def test_an_admin_that_is_gone_is_a_connect_error_named_as_by_the_client(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    point_cell_at(tmp_path, dead)
    errors = []
    for call in (direct.get, client.list):
        with pytest.raises(SaxError) as info:
            call("/sax/test/m", sax_root=str(tmp_path), timeout=0.3)
        errors.append(info.value)
    assert errors[0].code == errors[1].code == Code.DEADLINE_EXCEEDED
    assert f"UNAVAILABLE: admin {dead}: ConnectError: " in errors[0].message
    assert errors[0].message == errors[1].message


def test_an_admin_that_swallows_connects_is_the_deadline_named_as_by_the_client(
    tmp_path: Path,
) -> None:
    """A connect timeout that the deadline cut short is the deadline's, in both clients."""
    with black_hole() as hole:
        point_cell_at(tmp_path, hole)
        errors = []
        for call in (direct.get, client.list):
            with pytest.raises(SaxError) as info:
                call("/sax/test/m", sax_root=str(tmp_path), timeout=0.3)  # < CONNECT_TIMEOUT_S
            errors.append(info.value)
    assert errors[0].code == errors[1].code == Code.DEADLINE_EXCEEDED
    assert f"admin {hole}: ConnectTimeout: timed out" in errors[0].message
    assert errors[0].message == errors[1].message


def test_a_connect_timeout_is_the_peers_only_while_the_deadline_has_time_left() -> None:
    """Each transport codes a connect timeout by the deadline: UNAVAILABLE (try another replica)
    with time left, DEADLINE_EXCEEDED once it is spent."""
    with black_hole() as hole:
        with pytest.raises(direct.TransportError) as sync:
            direct.send(hole, "GET", "/", timeout_s=0.2)

        async def connect() -> httpx.HTTPError:
            async with httpx.AsyncClient() as session:
                with pytest.raises(httpx.HTTPError) as info:
                    await session.get(f"http://{hole}/", timeout=http.timeout(0.2))
            return info.value

        async_exc = asyncio.run(connect())
    assert (sync.value.kind, type(async_exc).__name__) == ("ConnectTimeout", "ConnectTimeout")
    spent, left = Deadline(time.monotonic()), Deadline.after(10)
    for deadline, code in ((spent, Code.DEADLINE_EXCEEDED), (left, Code.UNAVAILABLE)):
        errors = [
            sync.value.error(hole, deadline),
            http.error_from_transport(async_exc, hole, deadline),
        ]
        assert [e.code for e in errors] == [code, code]
        assert errors[0].message == errors[1].message == f"{hole}: ConnectTimeout: timed out"


def test_the_admin_is_followed_to_its_new_address(cell: FakeCell) -> None:
    root = cell.sax_root
    assert direct.get("/sax/test/m", sax_root=root)["model_id"] == "/sax/test/m"
    successor = FakeAdmin()
    successor.add_model("m", cell.addresses[:1])
    new_server = ServerThread(successor.app)
    try:
        cell.admin.unavailable = True  # deposed: 503 makes the caller re-read location.json
        point_cell_at(Path(root), new_server.address)
        info = direct.get("/sax/test/m", sax_root=root, timeout=10)
        assert [r["address"] for r in info["replicas"]] == cell.addresses[:1]
    finally:
        new_server.stop()


def test_cell_without_config_or_sax_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SaxError) as info:
        direct.get("/sax/nocell/m", sax_root=str(tmp_path), timeout=1)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "/sax/nocell" in info.value.message
    monkeypatch.delenv("SAX_ROOT", raising=False)
    with pytest.raises(SaxError) as unset:
        direct.DirectModel("/sax/test/m")
    assert unset.value.code == Code.FAILED_PRECONDITION


def test_a_file_url_root_reads_the_same_location(cell: FakeCell) -> None:
    info = direct.get("/sax/test/m", sax_root=f"file://{cell.sax_root}", timeout=5)
    assert info["model_id"] == "/sax/test/m"


def test_generate_sends_the_clients_request_and_spreads_load(cell: FakeCell) -> None:
    m = direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    reply = json.loads(m.generate("hi", {"num_samples": 2}))
    assert [(s["text"], s["score"]) for s in reply["samples"]] == [("hi", 0.0), ("hi", -0.5)]
    for i in range(20):
        direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=10).generate(f"q{i}")
    assert all(r.served > 0 for r in cell.replicas)


@pytest.mark.parametrize("mode", ["unavailable", "not_found"])
def test_a_failing_replica_is_skipped(cell: FakeCell, mode: str) -> None:
    cell.replicas[0].mode = mode
    for i in range(6):
        m = direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=10)
        assert json.loads(m.generate(f"x{i}"))["samples"][0]["text"] == f"x{i}"
    assert cell.replicas[0].served == 0 and cell.replicas[1].served == 6


def test_a_stopped_replica_is_failed_over(cell: FakeCell) -> None:
    cell.replica_servers[0].stop()  # still in the admin's set
    for i in range(4):
        m = direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=10)
        assert json.loads(m.generate(f"s{i}"))["samples"][0]["text"] == f"s{i}"


def test_retries_until_the_deadline_then_reports_the_last_error(cell: FakeCell) -> None:
    for r in cell.replicas:
        r.mode = "unavailable"
    m = direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=0.6)
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        m.generate("z")
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert "UNAVAILABLE" in info.value.message
    assert 0.55 <= time.monotonic() - start < 2.0


def test_a_replica_that_swallows_connects_is_failed_over_or_is_the_deadline(
    cell: FakeCell,
) -> None:
    """A connect timeout with time left fails over (and ejects the replica); one the deadline
    cut short is the deadline's and leaves the replica in the rotation, in both clients."""
    with black_hole() as hole:
        cell.admin.add_model("dark", [hole])
        cell.admin.add_model("half", [hole, cell.addresses[0]])
        calls = {
            "direct": lambda name, t: direct.DirectModel(
                name, sax_root=cell.sax_root, timeout=t
            ).generate("q"),
            "client": lambda name, t: client.Model(
                name, sax_root=cell.sax_root, timeout=t
            ).lm.generate("q"),
            "stream": lambda name, t: list(
                client.Model(name, sax_root=cell.sax_root, timeout=t).lm.generate_stream("q")
            ),
        }
        for kind, call in calls.items():
            with pytest.raises(SaxError) as info:
                call("/sax/test/dark", 0.5)  # < CONNECT_TIMEOUT_S: the deadline ends the connect
            assert info.value.code == Code.DEADLINE_EXCEEDED, kind
            assert f"{hole}: ConnectTimeout: timed out" in info.value.message, kind
            assert not PICKER.ejected(hole), kind
        served = cell.replicas[0].served
        for kind, call in calls.items():
            for _ in range(2):  # > CONNECT_TIMEOUT_S: a dark replica fails over
                assert call("/sax/test/half", 10), kind
        assert cell.replicas[0].served == served + 6


def test_non_retryable_and_unknown_model_errors_are_raised_at_once(cell: FakeCell) -> None:
    start = time.monotonic()
    with pytest.raises(SaxError) as bad:
        direct.DirectModel("/sax/test/m", sax_root=cell.sax_root, timeout=30).generate("bad-input")
    assert bad.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(SaxError) as missing:
        direct.DirectModel("/sax/test/nope", sax_root=cell.sax_root).generate("q")  # no deadline
    assert missing.value.code == Code.NOT_FOUND
    assert time.monotonic() - start < 2.0
    assert sum(r.served for r in cell.replicas) == 0


def test_a_call_waits_for_a_replica_to_become_ready(cell: FakeCell) -> None:
    cell.admin.add_model("later", [])
    timer = threading.Timer(0.3, cell.admin.add_replica, ("later", cell.addresses[1]))
    timer.start()
    start = time.monotonic()
    m = direct.DirectModel("/sax/test/later", sax_root=cell.sax_root, timeout=10)
    assert json.loads(m.generate("late"))["samples"][0]["text"] == "late"
    assert 0.25 <= time.monotonic() - start < 5


def test_no_ready_replica_until_the_deadline_says_so(cell: FakeCell) -> None:
    cell.admin.add_model("empty", [])
    m = direct.DirectModel("/sax/test/empty", sax_root=cell.sax_root, timeout=0.5)
    with pytest.raises(SaxError) as info:
        m.generate("q")
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert "no ready replica for lm.generate on /sax/test/empty" in info.value.message


def test_a_reply_that_does_not_come_in_time_is_the_deadline(cell: FakeCell) -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(direct.TransportError) as info:
            direct.send(address, "GET", "/", timeout_s=0.2)
        assert 0.15 <= time.monotonic() - start < 2.0
    assert info.value.kind == "ReadTimeout"
    assert info.value.error(address, Deadline(None)).code == Code.DEADLINE_EXCEEDED
    admin = direct.DirectAdmin(cell.sax_root, CellId.parse("/sax/test"))
    assert admin.request("GET", "/v1/models/m", deadline=Deadline.after(5))["model_id"] == (
        "/sax/test/m"
    )
