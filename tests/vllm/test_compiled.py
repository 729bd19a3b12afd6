"""vLLM servables compile their model unless told to run eager, and keep the compiled code in
the model cache.

The test process runs eager by default (tests/conftest.py), so the shared Tiny engine is eager;
this module starts one engine with the servable default applied by hand and serves from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sax.backends.vllm_engine import (
    EAGER_ENV,
    EngineSettings,
    VllmEngine,
    default_enforce_eager,
    engine_args,
)
from sax.generation import SamplingOptions
from sax.models import assets
from sax.models.vllm import Tiny, VllmServableConfig, prepare_process


@pytest.mark.parametrize(
    ("raw", "eager"),
    [(None, None), ("", None), ("1", True), ("true", True), ("0", False), ("False", False)],
)
def test_the_environment_decides_eager_mode_for_unset_settings(
    raw: str | None, eager: bool | None
) -> None:
    environ = {} if raw is None else {EAGER_ENV: raw}
    assert default_enforce_eager(environ) is eager


def test_a_bad_eager_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match=EAGER_ENV):
        default_enforce_eager({EAGER_ENV: "sometimes"})


def test_unset_means_compiled_and_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    model = str(assets.tiny_llama_dir(seed=0))
    assert VllmServableConfig().enforce_eager is None
    monkeypatch.delenv(EAGER_ENV, raising=False)
    assert engine_args(EngineSettings(model=model)).enforce_eager is False
    assert engine_args(EngineSettings(model=model, enforce_eager=True)).enforce_eager is True
    monkeypatch.setenv(EAGER_ENV, "1")
    assert engine_args(EngineSettings(model=model)).enforce_eager is True
    assert engine_args(EngineSettings(model=model, enforce_eager=False)).enforce_eager is False


async def test_the_shared_engine_runs_eager_as_the_tests_ask(tiny: Tiny) -> None:
    assert tiny.engine is not None and tiny.engine.compiled is False


async def test_a_compiled_engine_serves_and_caches_its_code_in_the_model_cache() -> None:
    prepare_process()
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert cache == assets.cache_root() / "torch-compile" / "inductor"
    settings = EngineSettings(
        model=str(assets.tiny_llama_dir(seed=0)),
        dtype="float32",
        max_model_len=256,
        max_num_seqs=8,
        kv_cache_gib=0.0625,
        enforce_eager=False,
    )
    engine = await VllmEngine.start(settings)
    try:
        assert engine.compiled
        options = SamplingOptions(temperature=0.0, max_decode_steps=8)
        (sample,) = await engine.generate("The sky is", options, ignore_eos=True)
        assert sample.num_tokens == 8 and sample.finish_reason == "length"
        # Greedy decoding is deterministic: the compiled code answers a repeat identically.
        (again,) = await engine.generate("The sky is", options, ignore_eos=True)
        assert again.text == sample.text
    finally:
        await engine.shutdown()
    assert _files(cache)


def _files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]
