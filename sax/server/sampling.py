"""Saxml extra inputs -> sampling options, as a pure function.

Saxml passes per-request knobs as ``extra_inputs``; a servable declares which keys it accepts and
their defaults. Unknown keys and wrong types are INVALID_ARGUMENT errors that name the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sax.errors import invalid


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.0
    max_decode_steps: int = 64
    top_k: int = 0  # 0 = disabled
    top_p: float = 1.0
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)


# extra-input key -> (SamplingOptions field, accepted python types)
_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "temperature": ("temperature", (int, float)),
    "per_example_max_decode_steps": ("max_decode_steps", (int, float)),
    "max_decode_steps": ("max_decode_steps", (int, float)),
    "per_example_top_k": ("top_k", (int, float)),
    "top_k": ("top_k", (int, float)),
    "per_example_top_p": ("top_p", (int, float)),
    "top_p": ("top_p", (int, float)),
    "num_samples": ("num_samples", (int, float)),
    "seed": ("seed", (int, float)),
    "stop": ("stop", (str, list)),
}

MAX_DECODE_STEPS = 4096
MAX_SAMPLES = 16


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, types)


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise invalid(f"extra input {key!r} must be an integer, got {value!r}")
    return int(value)


def sampling_from_extra(
    extra: Mapping[str, Any], defaults: SamplingOptions | None = None
) -> SamplingOptions:
    """Applies `extra` over `defaults`; raises INVALID_ARGUMENT naming the bad key."""
    opts = defaults or SamplingOptions()
    changes: dict[str, Any] = {}
    value: Any
    for key, value in extra.items():
        if key not in _KEYS:
            raise invalid(f"unknown extra input {key!r}; accepted: {', '.join(sorted(_KEYS))}")
        name, types = _KEYS[key]
        if not _type_ok(value, types):
            raise invalid(f"extra input {key!r} has the wrong type: {value!r}")
        if name == "temperature":
            if value < 0:
                raise invalid(f"extra input {key!r} must be >= 0, got {value}")
            changes[name] = float(value)
        elif name == "max_decode_steps":
            steps = _as_int(key, value)
            if not 1 <= steps <= MAX_DECODE_STEPS:
                raise invalid(
                    f"extra input {key!r} must be in [1, {MAX_DECODE_STEPS}], got {value}"
                )
            changes[name] = steps
        elif name == "top_k":
            k = _as_int(key, value)
            if k < 0:
                raise invalid(f"extra input {key!r} must be >= 0, got {value}")
            changes[name] = k
        elif name == "top_p":
            if not 0 < value <= 1:
                raise invalid(f"extra input {key!r} must be in (0, 1], got {value}")
            changes[name] = float(value)
        elif name == "num_samples":
            n = _as_int(key, value)
            if not 1 <= n <= MAX_SAMPLES:
                raise invalid(f"extra input {key!r} must be in [1, {MAX_SAMPLES}], got {value}")
            changes[name] = n
        elif name == "seed":
            changes[name] = _as_int(key, value)
        elif name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not all(isinstance(s, str) and s for s in stops):
                raise invalid(f"extra input {key!r} must be a non-empty string or list of them")
            changes[name] = tuple(stops)
    return replace(opts, **changes)
