"""model_path -> servable class. Only registered names load: never import a dotted path from a request.

Servable modules register their classes on import; `resolve` imports the module that owns a name
lazily (so the test servables never import vLLM or JAX), from `_MODULES`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from sax.errors import invalid
from sax.server.servable import Servable

# module -> the backend packages it needs
_MODULES: dict[str, tuple[str, ...]] = {
    "sax.models.test": (),
    "sax.models.vllm": ("vllm",),
    "sax.models.jax": ("jax",),
}

_CLASSES: dict[str, type[Servable]] = {}
_ALIASES: dict[str, str] = {}
_loaded: set[str] = set()


def register(path: str, *aliases: str) -> Callable[[type[Servable]], type[Servable]]:
    def wrap(cls: type[Servable]) -> type[Servable]:
        _CLASSES[path] = cls
        for alias in aliases:
            _ALIASES[alias] = path
        return cls

    return wrap


def backend_available(module: str) -> bool:
    """True when the servable module exists and the engine packages it needs are installed."""
    try:
        if importlib.util.find_spec(module) is None:
            return False
    except ModuleNotFoundError:
        return False
    return all(importlib.util.find_spec(pkg) is not None for pkg in _MODULES[module])


def _import_all(backends: set[str] | None = None) -> None:
    for module in _MODULES:
        if module in _loaded:
            continue
        short = module.rsplit(".", 1)[1]
        if backends is not None and short not in backends:
            continue
        if not backend_available(module):
            continue
        importlib.import_module(module)
        _loaded.add(module)


def canonical(path: str) -> str:
    return _ALIASES.get(path, path)


def resolve(path: str) -> type[Servable]:
    """The class a model path names (aliases included); INVALID_ARGUMENT if none does."""
    _import_all()
    cls = _CLASSES.get(canonical(path))
    if cls is None:
        raise invalid(f"model_path {path!r} is not a registered servable")
    return cls


def servable_paths(backends: set[str] | None = None) -> list[str]:
    """Registered paths and aliases whose backend is installed (and in `backends`, if given)."""
    _import_all(backends)
    allowed = {p for p, cls in _CLASSES.items() if backends is None or cls.backend in backends}
    aliases = [a for a, p in _ALIASES.items() if p in allowed]
    return sorted(allowed) + sorted(aliases)
