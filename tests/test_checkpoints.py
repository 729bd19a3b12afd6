"""Checkpoints on gs:// (the fake-gcs-server emulator): the vLLM servables fetch a Hugging Face
model directory into the cache once; the JAX engine reads config and safetensors in place."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest

from sax.backends.jax.config import ModelConfig
from sax.backends.jax.weights import load_params
from sax.models import assets


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return assets.tiny_llama_dir()


@pytest.fixture
def gs_checkpoint(gcs_root: str, tiny_dir: Path) -> str:
    url = f"{gcs_root}/ckpt/tiny"
    fs, root = fsspec.core.url_to_fs(url)
    for f in sorted(p for p in tiny_dir.iterdir() if p.is_file()):
        fs.put_file(str(f), f"{root}/{f.name}")
    return url


def test_fetch_checkpoint_copies_a_gs_directory_once(
    gs_checkpoint: str, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAX_CACHE", str(tmp_path / "cache"))
    local = assets.fetch_checkpoint(gs_checkpoint)
    names = sorted(p.name for p in tiny_dir.iterdir() if p.is_file())
    assert sorted(p.name for p in local.iterdir()) == names
    for name in names:
        assert (local / name).read_bytes() == (tiny_dir / name).read_bytes()
    (local / "config.json").touch()
    mtime = (local / "config.json").stat().st_mtime_ns
    assert assets.fetch_checkpoint(gs_checkpoint) == local  # cached: not copied again
    assert (local / "config.json").stat().st_mtime_ns == mtime


def test_missing_checkpoint_is_a_clear_error(gcs_root: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no files"):
        assets.fetch_checkpoint(f"{gcs_root}/nothing-here")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        assets.fetch_checkpoint(str(tmp_path / "nope"))


def test_jax_reads_config_and_weights_from_gs(gs_checkpoint: str, tiny_dir: Path) -> None:
    cfg = ModelConfig.load(gs_checkpoint)
    assert cfg == ModelConfig.load(str(tiny_dir))
    remote, local = load_params(gs_checkpoint, cfg), load_params(str(tiny_dir), cfg)
    flat_remote = dict(_leaves(remote))
    flat_local = dict(_leaves(local))
    assert flat_remote.keys() == flat_local.keys() and flat_remote
    for key, value in flat_local.items():
        np.testing.assert_array_equal(np.asarray(flat_remote[key]), np.asarray(value))


def _leaves(tree: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _leaves(v, f"{prefix}/{k}")]
    if isinstance(tree, list | tuple):
        return [kv for i, v in enumerate(tree) for kv in _leaves(v, f"{prefix}/{i}")]
    return [(prefix, tree)]
