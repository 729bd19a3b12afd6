"""model_path -> servable class. Only registered names load: never import a dotted path from a request.

Servable modules are found through the ``sax.servables`` entry points of the installed packages
(pyproject.toml), one per backend: ``vllm = "sax.models.vllm"`` says the vllm backend's servables
live in that module. A module registers its classes on import (`register`). Modules are imported
lazily, and only those of enabled backends, so the test servables never import vLLM or JAX. A
module whose engine packages are missing fails to import with ModuleNotFoundError naming one
(`sax.backends.require`): that backend is not installed, which is an error only where it was
asked for by name.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from importlib.metadata import entry_points

from sax.errors import invalid
from sax.server.servable import Servable

GROUP = "sax.servables"

_CLASSES: dict[str, type[Servable]] = {}
_ALIASES: dict[str, str] = {}
_loaded: set[str] = set()  # backends whose servable module imported
_failed: dict[str, str] = {}  # backend -> why its servable module did not import
_absent: dict[str, str] = {}  # backend -> the engine package it lacks (not installed)
_enabled: set[str] | None = None  # set by `prepare_backends`: never import the others


def register(path: str, *aliases: str) -> Callable[[type[Servable]], type[Servable]]:
    def wrap(cls: type[Servable]) -> type[Servable]:
        _CLASSES[path] = cls
        for alias in aliases:
            _ALIASES[alias] = path
        return cls

    return wrap


@functools.cache
def _modules() -> dict[str, str]:
    """backend -> the module holding its servables, from the installed entry points."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def _missing_package(exc: ModuleNotFoundError) -> str | None:
    """The top-level package `exc` finds missing, or None when that package is installed (a
    broken install, or a sax module that does not exist: failures, not absences)."""
    top = (exc.name or "").split(".")[0]
    if not top or top == "sax" or importlib.util.find_spec(top) is not None:
        return None
    return top


def _import(backend: str, *, prepare: bool) -> None:
    """Imports `backend`'s servable module once, so its classes register; with `prepare`, runs
    its ``prepare_process()`` too. Records an import failure in `_failed` and a missing engine
    package in `_absent`."""
    if backend in _loaded or backend in _failed or backend in _absent:
        return
    try:
        module = importlib.import_module(_modules()[backend])
        prepare_process = getattr(module, "prepare_process", None)
        if prepare and prepare_process is not None:
            prepare_process()
    except ModuleNotFoundError as exc:
        missing = _missing_package(exc)
        if missing is None:
            _failed[backend] = f"{type(exc).__name__}: {exc}"
        else:
            _absent[backend] = missing
        return
    except Exception as exc:
        _failed[backend] = f"{type(exc).__name__}: {exc}"
        return
    _loaded.add(backend)


def _import_all(backends: set[str] | None = None) -> None:
    for backend in _modules():
        if backends is not None and backend not in backends:
            continue
        if _enabled is not None and backend not in _enabled:
            continue
        _import(backend, prepare=False)


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
    modules = _modules()
    for backend in modules:
        if backends is None or backend in backends:
            _import(backend, prepare=True)
    for backend in sorted(backends or set()):
        if backend not in modules:
            _failed.setdefault(backend, "unknown backend")
        elif backend in _absent:
            _failed.setdefault(backend, f"not installed (missing {_absent[backend]})")
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
