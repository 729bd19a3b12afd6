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
    "sax.models.vision": ("torch", "transformers", "diffusers", "PIL"),
}
# module -> the backend name its servables declare, where it differs from the module's name
_BACKEND_OF: dict[str, str] = {"sax.models.vision": "torch"}

_CLASSES: dict[str, type[Servable]] = {}
_ALIASES: dict[str, str] = {}
_loaded: set[str] = set()
_failed: dict[str, str] = {}  # backend -> why its servable module did not import
_enabled: set[str] | None = None  # set by `prepare_backends`: never import the others


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


def _backend_of(module: str) -> str:
    return _BACKEND_OF.get(module, module.rsplit(".", 1)[1])


def _import_all(backends: set[str] | None = None) -> None:
    for module in _MODULES:
        backend = _backend_of(module)
        if module in _loaded or backend in _failed:
            continue
        if backends is not None and backend not in backends:
            continue
        if _enabled is not None and backend not in _enabled:
            continue
        if not backend_available(module):
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            _failed[backend] = f"{type(exc).__name__}: {exc}"
            continue
        _loaded.add(module)


def prepare_backends(backends: set[str] | None = None) -> dict[str, str]:
    """Imports the servable modules of the enabled backends and sets up their engines' process
    environment (a module's ``prepare_process()``), on the calling thread; returns backend ->
    why it is unavailable.

    Call on the main thread before serving: first imports of torch, transformers and vLLM race
    when loader threads run them. A backend that fails to import is reported, not fatal: its
    model paths are not offered to the admin, and the other backends serve. With `backends`
    None every installed backend is prepared; one named explicitly but not installed is
    reported as such.
    """
    global _enabled
    if backends is not None:
        _enabled = set(backends) | (_enabled or set())
    for module in _MODULES:
        backend = _backend_of(module)
        if backends is not None and backend not in backends:
            continue
        if module in _loaded or backend in _failed:
            continue
        if not backend_available(module):
            if backends is not None:
                missing = [p for p in _MODULES[module] if importlib.util.find_spec(p) is None]
                _failed[backend] = f"not installed (missing {', '.join(missing) or module})"
            continue
        try:
            imported = importlib.import_module(module)
            prepare = getattr(imported, "prepare_process", None)
            if prepare is not None:
                prepare()
        except Exception as exc:
            _failed[backend] = f"{type(exc).__name__}: {exc}"
            continue
        _loaded.add(module)
    known = {_backend_of(m) for m in _MODULES}
    for backend in sorted((backends or set()) - known):
        _failed.setdefault(backend, "unknown backend")
    return {b: why for b, why in _failed.items() if backends is None or b in backends}


def canonical(path: str) -> str:
    return _ALIASES.get(path, path)


def resolve(path: str) -> type[Servable]:
    """The class a model path names (aliases included); INVALID_ARGUMENT if none does."""
    _import_all()
    cls = _CLASSES.get(canonical(path))
    if cls is None:
        why = "".join(f"; backend {b} is unavailable: {w}" for b, w in sorted(_failed.items()))
        raise invalid(f"model_path {path!r} is not a registered servable{why}")
    return cls


def servable_paths(backends: set[str] | None = None) -> list[str]:
    """Registered paths and aliases whose backend is installed (and in `backends`, if given)."""
    _import_all(backends)
    allowed = {p for p, cls in _CLASSES.items() if backends is None or cls.backend in backends}
    aliases = [a for a, p in _ALIASES.items() if p in allowed]
    return sorted(allowed) + sorted(aliases)
