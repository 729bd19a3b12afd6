"""Engine lifecycle: unload frees the engine, bad overrides fail before any engine starts."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from sax.backends.vllm_engine import EngineSettings
from sax.errors import Code, SaxError
from sax.models.vllm import Tiny
from sax.server.servable import LoadSpec
from tests.vllm.conftest import wait_running


def _live(pids: set[int]) -> list[int]:
    live = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                live.append(pid)
        except psutil.NoSuchProcess:
            pass
    return live


def _cmdline(proc: psutil.Process) -> str:
    """The process's command line, or "" when it exited (or became a zombie) after it was listed:
    a short-lived helper can vanish between `children()` and the read of its `/proc` entry."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


async def test_unload_stops_engine_processes_and_fails_inflight_requests() -> None:
    """A fresh engine (not the session's) in vLLM's two-process layout: after unload no engine
    process is left, a request that was running fails UNAVAILABLE instead of hanging, and new
    requests are refused."""
    overrides = {"kv_cache_gib": 0.125, "executor": "mp"}
    servable = Tiny(LoadSpec("/sax/test/t2", "sax.models.vllm.Tiny", "None", overrides))
    await servable.load()
    assert servable.engine is not None
    # The engine core and its worker run in their own processes, children of this one.
    cores = [psutil.Process(pid) for pid in servable.engine.engine_pids]
    assert cores and all(p.ppid() == os.getpid() for p in cores)
    started = {p.pid for core in cores for p in [core, *core.children(recursive=True)]}
    assert len(started) >= 2

    running = asyncio.create_task(
        servable.generate("hello", servable.sampling({"per_example_max_decode_steps": 400}))
    )
    await wait_running(servable, 1)
    await servable.unload()

    with pytest.raises(SaxError) as inflight:
        await asyncio.wait_for(running, timeout=10)
    assert inflight.value.code is Code.UNAVAILABLE
    assert _live(started) == []
    with pytest.raises(SaxError) as after:
        await servable.generate("hello", servable.sampling({}))
    assert after.value.code is Code.UNAVAILABLE
    await servable.unload()  # idempotent


async def test_unload_during_load_leaves_no_engine_behind() -> None:
    """The manager cancels a load when the model is unassigned meanwhile; the engine that was
    starting in a thread must be stopped, not orphaned."""
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    servable = Tiny(
        LoadSpec("/sax/test/t3", "sax.models.vllm.Tiny", "None", {"kv_cache_gib": 0.125})
    )
    loading = asyncio.create_task(servable.load())

    def engine_cores() -> list[psutil.Process]:
        return [
            p
            for p in me.children(recursive=True)
            if p.pid not in before and "EngineCore" in _cmdline(p)
        ]

    async with asyncio.timeout(60):
        while not engine_cores():  # noqa: ASYNC110 (waiting for another process to appear)
            await asyncio.sleep(0.05)
    cores = engine_cores()
    loading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loading
    assert servable.engine is None
    assert _live({p.pid for p in cores}) == []
    # Nothing else it started is left either (multiprocessing's shared resource tracker aside).
    leftover = [
        p.pid
        for p in me.children(recursive=True)
        if p.pid not in before and "resource_tracker" not in _cmdline(p)
    ]
    assert _live(set(leftover)) == []


def test_unknown_override_is_rejected_by_name() -> None:
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", {"kv_cache_gb": 1}))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "kv_cache_gb" in err.value.message


def test_override_with_wrong_type_is_rejected() -> None:
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", {"max_model_len": "big"}))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "max_model_len" in err.value.message


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_a_bad_max_num_seqs_is_rejected_by_name(value: object) -> None:
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", {"max_num_seqs": value}))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "max_num_seqs" in err.value.message


@pytest.mark.parametrize("value", ["threads", "", 1])
def test_a_bad_executor_is_rejected_by_name(value: object) -> None:
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", {"executor": value}))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "executor" in err.value.message


def test_uni_with_several_workers_is_rejected_by_name() -> None:
    overrides = {"executor": "uni", "tensor_parallel_size": 2}
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", overrides))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "executor" in err.value.message and "tensor_parallel_size=2" in err.value.message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"cpu_threads": 0}, "cpu_threads"),
        ({"cpu_threads": "all"}, "cpu_threads"),
        ({"executor": "mp", "cpu_threads": 2}, "executor='mp'"),
    ],
)
def test_a_bad_cpu_threads_is_rejected_by_name(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(SaxError) as err:
        Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", overrides))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "cpu_threads" in err.value.message and named in err.value.message


def test_the_executor_override_reaches_the_engine_settings() -> None:
    def settings(overrides: dict[str, object]) -> EngineSettings:
        servable = Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", overrides))
        return servable.engine_settings(servable.model_dir())

    assert settings({}).executor == "auto"
    assert settings({"executor": "mp"}).executor == "mp"
    assert settings({}).cpu_threads is None
    assert settings({"cpu_threads": 2}).cpu_threads == 2


def test_max_num_seqs_is_left_to_vllm_unless_set() -> None:
    def settings(overrides: dict[str, object]) -> EngineSettings:
        servable = Tiny(LoadSpec("/sax/test/t", "sax.models.vllm.Tiny", "None", overrides))
        return servable.engine_settings(servable.model_dir())

    assert settings({}).max_num_seqs is None
    assert settings({"max_num_seqs": 16}).max_num_seqs == 16


def test_overrides_change_engine_settings_and_default_sampling() -> None:
    servable = Tiny(
        LoadSpec(
            "/sax/test/t",
            "sax.models.vllm.Tiny",
            "None",
            {"max_model_len": 256, "temperature": 0.5, "max_decode_steps": 7, "ram": 1},
        )
    )
    settings = servable.engine_settings(servable.model_dir())
    assert settings.max_model_len == 256 and settings.load_format == "auto"
    opts = servable.sampling({})
    assert (opts.temperature, opts.max_decode_steps) == (0.5, 7)
    assert servable.sampling({"temperature": 0.0}).temperature == 0.0
