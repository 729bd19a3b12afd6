"""JAX's persistent compilation cache, kept in a directory the caller names (the model cache).

A load compiles every shape bucket of the engine (`Engine.precompile`). With this cache, a later
load of the same model and settings on the same host (a restart, a second replica, the next test
run) reads the executables back instead of compiling them again. JAX keys an entry by the
compiled program, its compile options, the devices and the jax/jaxlib versions, so an entry is
never used for anything else, and the cache is a local directory, so it works offline.

Concurrent processes share it safely: JAX takes a file lock around each read and write only when
the cache has a size bound, so one is always set (without it a reader may see a half-written
entry). The directory is trusted like the weights beside it: whoever can write there can make
this process run their code.

The settings are process-wide: applied once, and only where the process has not chosen a cache
of its own (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import jax

MAX_BYTES = 4 << 30  # least recently used entries go beyond this

_lock = threading.Lock()


def enable(directory: Path) -> None:
    """Keeps every compiled executable of this process in `directory` from now on."""
    with _lock:
        if jax.config.jax_compilation_cache_dir:
            return
        directory.mkdir(parents=True, exist_ok=True)
        # Bucket compiles take well under JAX's default 1 s threshold on small models.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        if jax.config.jax_compilation_cache_max_size == -1:
            jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
        jax.config.update("jax_compilation_cache_dir", str(directory))
