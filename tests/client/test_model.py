"""The blocking data client against fake replicas: load spreading, failover, deadlines."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sax.client import Model
from sax.errors import Code, SaxError
from tests.client.fakes import FakeCell
from tests.helpers import wait_for


def test_generate_returns_text_score_pairs_and_spreads_load(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    for i in range(40):  # distinct prompts: a shared one would stay on its home replica
        assert m.lm.generate(f"hello world {i}") == [(f"hello world {i}", 0.0)]
    assert all(r.served > 5 for r in cell.replicas), [r.served for r in cell.replicas]
    samples = m.lm.generate_samples("hi", {"num_samples": 2})
    assert [(s.text, s.score, s.finish_reason) for s in samples] == [
        ("hi", 0.0, "stop"),
        ("hi", -0.5, "stop"),
    ]


def test_score_embed_gradient(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    assert m.lm.score("p", ["a", "bcd"]) == [-1.0, -3.0]
    assert m.lm.score("p", "ab") == [-2.0]
    assert m.lm.embed("four") == [0.5, 0.25, 4.0]
    grad = m.lm.gradient("p", "s")
    assert grad.score == [-2.0] and grad.gradients["w"].shape == [10]


@pytest.mark.parametrize("mode", ["unavailable", "not_found"])
def test_failing_replica_is_skipped_without_failing_a_request(cell: FakeCell, mode: str) -> None:
    cell.replicas[0].mode = mode
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    for _ in range(30):
        assert m.lm.generate("x") == [("x", 0.0)]
    assert cell.replicas[1].served == 30
    assert cell.replicas[0].served == 0


def test_stopped_replica_fails_over_under_concurrency(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    assert m.lm.generate("warm") == [("warm", 0.0)]
    errors: list[BaseException] = []
    done = 0

    def worker() -> None:
        nonlocal done
        for _ in range(25):
            try:
                m.lm.generate("y")
                done += 1
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    cell.replica_servers[0].stop()  # still in the admin's set: the client must route around it
    for t in threads:
        t.join()
    assert errors == []
    assert done == 100


def test_retries_until_the_deadline_then_reports_the_last_error(cell: FakeCell) -> None:
    for r in cell.replicas:
        r.mode = "unavailable"
    m = Model("/sax/test/m", sax_root=cell.sax_root)
    m.replicas(timeout=5)  # discovery done, so the timing below is the retry loop's
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        m.lm.generate("z", timeout=0.6)
    elapsed = time.monotonic() - start
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert "UNAVAILABLE" in info.value.message
    assert 0.55 <= elapsed < 2.0


def test_non_retryable_error_is_raised_at_once(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=30)
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        m.lm.generate("bad-input")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert time.monotonic() - start < 1.0
    assert sum(r.served for r in cell.replicas) == 0


def test_call_waits_for_a_replica_to_become_ready(cell: FakeCell) -> None:
    cell.admin.add_model("later", [])
    m = Model("/sax/test/later", sax_root=cell.sax_root, timeout=10)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(m.lm.generate, "late")
        time.sleep(0.3)
        assert not future.done()
        cell.admin.add_replica("later", cell.addresses[1])
        assert future.result(timeout=5) == [("late", 0.0)]


def test_unknown_model_fails_fast_with_not_found(cell: FakeCell) -> None:
    m = Model("/sax/test/nope", sax_root=cell.sax_root)  # no deadline at all
    start = time.monotonic()
    with pytest.raises(SaxError) as info:
        m.lm.generate("q")
    assert info.value.code == Code.NOT_FOUND
    assert time.monotonic() - start < 2.0


def test_unpublish_then_publish_again_is_followed(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=5)
    assert m.lm.generate("a") == [("a", 0.0)]
    del cell.admin.models["m"]
    with pytest.raises(SaxError) as info:
        wait_for(lambda: m.lm.generate("a") and False, timeout_s=5)
    assert info.value.code == Code.NOT_FOUND
    cell.admin.add_model("m", cell.addresses)
    assert m.lm.generate("b") == [("b", 0.0)]


def test_watcher_applies_additions_and_removals(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=5)
    assert sorted(m.replicas()) == sorted(cell.addresses)
    cell.admin.remove_replica("m", cell.addresses[0])
    wait_for(lambda: m.replicas() == (cell.addresses[1],), timeout_s=5)
    for _ in range(10):
        m.lm.generate("only-one")
    assert cell.replicas[0].served == 0
    cell.admin.add_replica("m", cell.addresses[0])
    wait_for(lambda: len(m.replicas()) == 2, timeout_s=5)


def test_missing_sax_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAX_ROOT", raising=False)
    with pytest.raises(SaxError) as info:
        Model("/sax/test/m")
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "SAX_ROOT" in info.value.message


def test_sax_root_from_environment(cell: FakeCell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAX_ROOT", cell.sax_root)
    assert Model("/sax/test/m", timeout=5).lm.generate("env") == [("env", 0.0)]


def test_invalid_model_id_is_rejected() -> None:
    with pytest.raises(SaxError) as info:
        Model("/sax/Test/m", sax_root="/tmp")
    assert info.value.code == Code.INVALID_ARGUMENT
