"""The blocking client is the async one run on a portal: the same API, method for method, usable
from many threads and beside a running event loop, and leaving no thread once closed."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

import sax
import sax.client
from sax.client import async_control, control
from sax.client.admin import AdminClient, AsyncAdminClient
from sax.client.async_model import (
    AsyncGenerateStream,
    AsyncLM,
    AsyncModel,
    AsyncVM,
    watchers,
)
from sax.client.faces import BlockingIterator, Owner
from sax.client.locations import watch_forever
from sax.client.model import LM, VM, GenerateStream, Model
from sax.client.picker import PICKER
from sax.errors import Code, SaxError
from sax.naming import CellId, ModelId
from sax.schemas import WatchResult
from tests.client.fakes import FakeCell

TWINS = [
    (Model, AsyncModel),
    (LM, AsyncLM),
    (VM, AsyncVM),
    (GenerateStream, AsyncGenerateStream),
    (AdminClient, AsyncAdminClient),
]
SYNC_ONLY = {"close"}  # a blocking client owns its loop thread; an async one runs on the caller's
RENAMED = {"aclose": "close"}  # the async spelling -> the blocking one
ITERATORS = {"GenerateStream": GenerateStream, "BlockingIterator": BlockingIterator}


def methods(cls: type) -> dict[str, Any]:
    """Public methods of `cls`, by name."""
    return {
        name: inspect.getattr_static(cls, name)
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


def properties(cls: type) -> set[str]:
    return {name for name in dir(cls) if isinstance(getattr(cls, name), property)}


def admin_calls(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The public functions of `module` that are, or are made from, `async_control`'s."""
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == async_control.__name__
    }


def assert_twins(sync: Any, aio: Any, where: str) -> None:
    """`sync` takes `aio`'s parameters and returns what `aio` returns (awaited), or, where `aio`
    returns an async iterator, a blocking iterator."""
    sync_sig, aio_sig = inspect.signature(sync), inspect.signature(aio)
    assert list(sync_sig.parameters.values()) == list(aio_sig.parameters.values()), where
    assert not inspect.iscoroutinefunction(sync), where
    returns = aio_sig.return_annotation
    if isinstance(returns, str) and returns.startswith("Async"):
        assert issubclass(ITERATORS[sync_sig.return_annotation], BlockingIterator), where
    else:
        assert sync_sig.return_annotation == returns, where


@pytest.mark.parametrize(("sync_cls", "async_cls"), TWINS, ids=lambda c: c.__name__)
def test_each_blocking_class_has_the_api_of_its_async_twin(sync_cls: type, async_cls: type) -> None:
    sync_api, async_api = methods(sync_cls), methods(async_cls)
    expected = {RENAMED.get(name, name) for name in async_api}
    assert set(sync_api) - SYNC_ONLY == expected - SYNC_ONLY
    for name, aio in async_api.items():
        if RENAMED.get(name, name) not in SYNC_ONLY:
            assert_twins(sync_api[name], aio, f"{sync_cls.__name__}.{name}")
    assert properties(async_cls) <= properties(sync_cls)
    if issubclass(sync_cls, Owner):  # the clients callers construct
        init = f"{sync_cls.__name__}.__init__"
        assert inspect.signature(sync_cls) == inspect.signature(async_cls), init


def test_a_model_s_attributes_are_its_twin_s() -> None:
    m = Model("/sax/test/m", sax_root="/tmp/root", timeout=3)
    for name in properties(Model):
        assert getattr(m, name) == getattr(m.aio, name), name
    assert (m.lm.aio, m.vm.aio) == (m.aio.lm, m.aio.vm)


def test_the_blocking_admin_calls_are_the_async_ones() -> None:
    sync, aio = admin_calls(control), admin_calls(async_control)
    assert set(sync) == set(aio) and "publish" in aio
    for name, fn in aio.items():
        assert inspect.iscoroutinefunction(fn), name
        assert_twins(sync[name], fn, f"control.{name}")


def test_the_package_names_resolve_to_the_blocking_and_async_faces() -> None:
    assert sax.__all__ == sax.client.__all__
    assert sax.Model is Model and sax.client.AsyncModel is AsyncModel
    assert sax.publish is control.publish and sax.client.close is sax.close
    with pytest.raises(AttributeError, match="module 'sax' has no attribute 'nothing'"):
        _ = sax.nothing


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def test_threads_beside_a_running_loop_share_one_model_and_close_leaves_no_thread(
    cell: FakeCell,
) -> None:
    before = set(threading.enumerate())
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="callers-loop")
    loop_thread.start()
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    try:

        async def on_the_running_loop() -> list[tuple[str, float]]:
            return m.lm.generate("from a coroutine")  # blocks this loop; its own runs the call

        coming = asyncio.run_coroutine_threadsafe(on_the_running_loop(), loop)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: m.lm.generate(f"t{i}"), range(64)))
        assert results == [[(f"t{i}", 0.0)] for i in range(64)]
        assert coming.result(10) == [("from a coroutine", 0.0)]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()
    assert m.portal.running
    m.close()
    assert not m.portal.running
    assert _new_threads(before) == []
    with Model("/sax/test/m", sax_root=cell.sax_root, timeout=10) as again:
        assert again.lm.embed("xy") == [0.5, 0.25, 2.0]
    assert m.lm.generate("reopened") == [("reopened", 0.0)]  # a closed model starts again
    sax.client.close()  # closes every blocking client
    assert _new_threads(before) == []


def _pending(cell: FakeCell) -> int:
    return sum(PICKER.pending(a) for a in cell.addresses)


def test_a_blocking_stream_is_closed_by_close_and_by_break(cell: FakeCell) -> None:
    m = Model("/sax/test/m", sax_root=cell.sax_root, timeout=10)
    stream = m.lm.generate_stream("a b c")
    assert next(stream).items[0].text == "a"
    assert _pending(cell) == 1  # a replica holds the open stream
    stream.close()
    assert _pending(cell) == 0
    for chunk in m.lm.generate_stream("a b c"):
        assert chunk.items[0].text == "a"
        break
    assert _pending(cell) == 0
    with m.lm.generate_stream("x y") as held:
        assert [c.items[0].text for c in held] == ["x", " y"]
    assert held.samples is not None and held.texts == ["x y"]
    m.close()


def test_blocking_watch_stops_on_its_event_and_its_admin_closes(cell: FakeCell) -> None:
    before = set(threading.enumerate())
    admin = AdminClient(cell.sax_root, CellId.parse("/sax/test"))
    seen: list[tuple[str, ...]] = []
    stop = threading.Event()

    def stop_when_seen(result: WatchResult) -> None:
        seen.append(tuple(result.values))
        stop.set()

    error = watch_forever(admin, ModelId.parse("/sax/test/m"), stop_when_seen, stop)
    assert error.code == Code.CANCELLED
    assert seen == [tuple(sorted(cell.addresses))]
    admin.close()
    assert _new_threads(before) == []


async def test_an_ended_watcher_leaves_the_loop_s_registry(cell: FakeCell) -> None:
    m = AsyncModel("/sax/test/nope", sax_root=cell.sax_root, timeout=10)
    with pytest.raises(SaxError) as info:
        await m.lm.generate("q")
    assert info.value.code == Code.NOT_FOUND
    assert (cell.sax_root, m.model_id) not in watchers()


def test_blocking_vision_calls_reach_the_replica(cell: FakeCell) -> None:
    with Model("/sax/test/m", sax_root=cell.sax_root, timeout=10) as m:
        with pytest.raises(SaxError) as info:
            m.vm.classify(b"\x89PNG")
    assert info.value.code == Code.UNIMPLEMENTED
    assert "vm.classify" in info.value.message
