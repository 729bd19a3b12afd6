"""Engines behind the servable interface: vLLM (`vllm_engine`), JAX (`jax`), torch (`torch`).

Engines import nothing from the model server or the wire schemas: they take and return the
engine-neutral types of `sax.generation`.
"""

from __future__ import annotations

import importlib.util


def require(*packages: str) -> None:
    """Raises ModuleNotFoundError naming the first of `packages` (import names) that is not
    installed, without importing any: engines import their large packages on first use, so a
    module calls this at import to fail, when one is missing, as if it had imported it."""
    for name in packages:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
