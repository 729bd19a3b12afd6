"""`Batcher`: batches per lane up to a bound, keeps answers in order, drops cancelled callers,
fails a batch as a whole, and answers UNAVAILABLE once closed or dead.

The lane functions hold their first batch on a `threading.Event`, so what queues behind it is
decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from PIL import Image

from sax.backends.torch.batcher import Batcher
from sax.errors import Code, SaxError
from sax.models.vision import ImageClassifier
from sax.schemas import ReplicaStatus
from sax.server.images import encode_png
from sax.server.manager import ModelServer
from tests.server.harness import assign, options


class Gated:
    """A lane function that records each batch and blocks the first until `release`."""

    def __init__(self, fn: Callable[[int], int] = lambda x: x * 10) -> None:
        self.fn = fn
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        self.release.wait(10)
        return [self.fn(i) for i in items]


async def started(lane: Gated) -> None:
    await asyncio.to_thread(lane.started.wait, 10)


async def queued(batcher: Batcher, lane: str, n: int) -> None:
    async with asyncio.timeout(10):
        while len(batcher._queues[lane]) < n:  # noqa: ASYNC110 (the queue has no event)
            await asyncio.sleep(0.001)


async def test_batches_queued_requests_up_to_the_bound_in_order() -> None:
    lane = Gated()
    batcher = Batcher({"x": lane}, max_batch_size=4, max_wait_s=0).start()
    first = asyncio.ensure_future(batcher.run("x", 0))
    await started(lane)
    rest = [asyncio.ensure_future(batcher.run("x", i)) for i in range(1, 10)]
    await queued(batcher, "x", 9)
    lane.release.set()
    assert await asyncio.gather(first, *rest) == [i * 10 for i in range(10)]
    assert lane.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert batcher.stats.peak_batch_size == 4 and batcher.stats.items == 10
    await batcher.close()


async def test_lanes_batch_apart() -> None:
    a, b = Gated(), Gated(lambda x: -x)
    batcher = Batcher({"a": a, "b": b}, max_batch_size=8, max_wait_s=0).start()
    first = asyncio.ensure_future(batcher.run("a", 1))
    await started(a)
    others = [asyncio.ensure_future(batcher.run(lane, 2)) for lane in ("b", "a", "b")]
    await queued(batcher, "b", 2)
    a.release.set()
    b.release.set()
    assert await asyncio.gather(first, *others) == [10, -2, 20, -2]
    assert b.batches == [[2, 2]]
    await batcher.close()


async def test_a_cancelled_caller_leaves_the_queue() -> None:
    lane = Gated()
    batcher = Batcher({"x": lane}, max_batch_size=8, max_wait_s=0).start()
    first = asyncio.ensure_future(batcher.run("x", 1))
    await started(lane)
    dropped = asyncio.ensure_future(batcher.run("x", 2))
    kept = asyncio.ensure_future(batcher.run("x", 3))
    await queued(batcher, "x", 2)
    dropped.cancel()
    lane.release.set()
    assert await first == 10 and await kept == 30
    assert lane.batches == [[1], [3]]
    await batcher.close()


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def boom(items: list[int]) -> list[int]:
        raise ValueError("bad weights")

    batcher = Batcher({"x": boom}, max_batch_size=8, max_wait_s=0).start()
    for result in await asyncio.gather(
        batcher.run("x", 1), batcher.run("x", 2), return_exceptions=True
    ):
        assert isinstance(result, SaxError) and result.code is Code.INTERNAL
        # The exception's text is logged under a request id, never sent to callers.
        assert "bad weights" not in result.message and "request id" in result.message
    assert batcher.alive  # the thread serves on
    await batcher.close()


async def test_close_fails_queued_callers_as_unavailable() -> None:
    lane = Gated()
    batcher = Batcher({"x": lane}, max_batch_size=1, max_wait_s=0).start()
    first = asyncio.ensure_future(batcher.run("x", 1))
    await started(lane)
    waiting = asyncio.ensure_future(batcher.run("x", 2))
    await queued(batcher, "x", 1)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)  # the close task's first step marks the batcher closing
    assert not batcher.alive
    lane.release.set()
    await closing
    assert await first == 10  # the batch in progress finishes
    with pytest.raises(SaxError) as err:
        await waiting
    assert err.value.code is Code.UNAVAILABLE
    with pytest.raises(SaxError) as err:
        await batcher.run("x", 3)
    assert err.value.code is Code.UNAVAILABLE
    assert batcher.dead_reason() is None  # a deliberate close is not a death


async def test_a_dead_thread_is_reported_and_refuses_work() -> None:
    def die(items: list[int]) -> list[int]:
        raise SystemExit("device lost")  # not an Exception: it escapes the batch handler

    batcher = Batcher({"x": die}, max_batch_size=1, max_wait_s=0).start()
    with pytest.raises(SaxError) as err:
        await batcher.run("x", 1)
    assert err.value.code is Code.UNAVAILABLE
    assert "device lost" in (batcher.dead_reason() or "")
    with pytest.raises(SaxError) as err:
        await batcher.run("x", 2)
    assert err.value.code is Code.UNAVAILABLE and "device lost" in err.value.message
    await batcher.close()


async def test_a_dead_device_thread_fails_the_model_on_its_server() -> None:
    """The model server's health poll sees the dead thread: the model goes FAILED with the
    reason, and a request in flight got a retryable 503."""

    def die(items: list[object]) -> list[object]:
        raise SystemExit("device lost")

    server = ModelServer(options())
    await server.apply([assign("doomed", "sax.models.vision.ImageClassifier")])
    await server.settle(120)
    model = server.get("/sax/test/doomed")
    assert model is not None and model.status is ReplicaStatus.LOADED, model
    servable = model.servable
    assert isinstance(servable, ImageClassifier) and servable.batcher is not None
    assert servable.health() is None
    servable.batcher.lanes["classify"] = die  # a device fault on the next batch
    with pytest.raises(SaxError) as err:
        await servable.classify(encode_png(Image.new("RGB", (8, 8))), {})
    assert err.value.code is Code.UNAVAILABLE
    await server.wait_until(lambda: model.status is ReplicaStatus.FAILED, 10)
    assert "device lost" in model.failure_reason
    await server.shutdown()
