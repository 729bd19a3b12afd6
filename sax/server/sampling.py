"""The rules every route applies to sampling options, as pure functions.

Saxml passes per-request knobs as ``extra_inputs``; the OpenAI routes pass them as request
fields. Both end in one `sax.generation.SamplingOptions`, checked by one table of rules (`RULES`): the ranges
OpenAI and vLLM define, finite numbers only. An error names the field the way its caller spelt it
(``extra_inputs.temperature`` on a Saxml route, ``temperature`` on an OpenAI one), never an
internal key.

A servable lists the options its engine honours (`Servable.sampling_fields`); any other option
set away from its default is refused by name rather than silently dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any

from sax.errors import invalid
from sax.generation import SamplingOptions

MAX_DECODE_STEPS = 4096
MAX_SAMPLES = 16
MAX_LOGIT_BIAS = 100.0
MAX_LOGPROBS = 20

# The options every servable honours (the original Saxml set).
BASIC_FIELDS = frozenset(
    {"temperature", "max_decode_steps", "top_k", "top_p", "num_samples", "seed", "stop"}
)
ALL_FIELDS = frozenset(f.name for f in fields(SamplingOptions))
_DEFAULTS = SamplingOptions()


def _number(value: Any, param: str, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{param} must be a number, got {value!r}", param)
    if not math.isfinite(value):
        raise invalid(f"{param} must be a finite number, got {value!r}", param)
    if integer and isinstance(value, float) and not value.is_integer():
        raise invalid(f"{param} must be an integer, got {value!r}", param)
    return value


def _ranged(
    lo: float, hi: float, *, integer: bool = False, lo_open: bool = False
) -> Callable[[Any, str], Any]:
    """A rule: a finite number in [lo, hi] (or (lo, hi]); returned as int or float."""

    def check(value: Any, param: str) -> Any:
        number = _number(value, param, integer=integer)
        if number < lo or (lo_open and number == lo) or number > hi:
            left = "(" if lo_open else "["
            raise invalid(f"{param} must be in {left}{lo:g}, {hi:g}], got {value!r}", param)
        return int(number) if integer else float(number)

    return check


def _seed(value: Any, param: str) -> int | None:
    if value is None:
        return None
    return int(_number(value, param, integer=True))


def _stop(value: Any, param: str) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list | tuple) or not all(isinstance(s, str) and s for s in stops):
        raise invalid(f"{param} must be a non-empty string or a list of them", param)
    return tuple(stops)


def _token_ids(value: Any, param: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    ):
        raise invalid(f"{param} must be a list of non-negative token ids", param)
    return tuple(value)


def _logit_bias(value: Any, param: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, Mapping | list | tuple):
        raise invalid(f"{param} must map token ids to biases", param)
    pairs = value.items() if isinstance(value, Mapping) else value
    out = []
    for pair in pairs:
        token, bias = pair
        try:
            token_id = int(token)
        except (TypeError, ValueError):
            raise invalid(f"{param} key {token!r} is not a token id", param) from None
        if token_id < 0:
            raise invalid(f"{param} key {token!r} is not a token id", param)
        number = _number(bias, f"{param}.{token}", integer=False)
        if not -MAX_LOGIT_BIAS <= number <= MAX_LOGIT_BIAS:
            raise invalid(f"{param} values must be in [-100, 100], got {bias!r} for {token}", param)
        out.append((token_id, float(number)))
    return tuple(sorted(out))


def _top_count(value: Any, param: str) -> int | None:
    if value is None:
        return None
    return int(_ranged(0, MAX_LOGPROBS, integer=True)(value, param))


def _schema(value: Any, param: str) -> str | None:
    """A JSON schema, given as an object or its JSON text; returned as canonical JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid(f"{param} must be a JSON schema object", param) from None
    if not isinstance(value, dict):
        raise invalid(f"{param} must be a JSON schema object", param)
    return json.dumps(value, sort_keys=True)


def _flag(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{param} must be true or false, got {value!r}", param)
    return value


# SamplingOptions field -> its rule: (value, public name) -> normalised value or INVALID_ARGUMENT.
RULES: dict[str, Callable[[Any, str], Any]] = {
    "temperature": _ranged(0.0, 2.0),
    "max_decode_steps": _ranged(1, MAX_DECODE_STEPS, integer=True),
    "top_k": _ranged(-1, 1 << 31, integer=True),
    "top_p": _ranged(0.0, 1.0, lo_open=True),
    "num_samples": _ranged(1, MAX_SAMPLES, integer=True),
    "seed": _seed,
    "stop": _stop,
    "min_p": _ranged(0.0, 1.0),
    "min_tokens": _ranged(0, MAX_DECODE_STEPS, integer=True),
    "presence_penalty": _ranged(-2.0, 2.0),
    "frequency_penalty": _ranged(-2.0, 2.0),
    "repetition_penalty": _ranged(0.0, 2.0, lo_open=True),
    "stop_token_ids": _token_ids,
    "logit_bias": _logit_bias,
    "ignore_eos": _flag,
    "skip_special_tokens": _flag,
    "logprobs": _top_count,
    "json_object": _flag,
    "json_schema": _schema,
}

# Saxml extra-input key -> SamplingOptions field (Saxml's names and their short aliases).
EXTRA_KEYS: dict[str, str] = {
    "temperature": "temperature",
    "per_example_max_decode_steps": "max_decode_steps",
    "max_decode_steps": "max_decode_steps",
    "per_example_top_k": "top_k",
    "top_k": "top_k",
    "per_example_top_p": "top_p",
    "top_p": "top_p",
    "num_samples": "num_samples",
    "seed": "seed",
    "stop": "stop",
    "min_p": "min_p",
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty",
    "stop_token_ids": "stop_token_ids",
    "ignore_eos": "ignore_eos",
}


def apply_options(
    values: Mapping[str, tuple[Any, str]],
    defaults: SamplingOptions,
    supported: frozenset[str] = ALL_FIELDS,
) -> SamplingOptions:
    """`values` (field -> (value, public name)) checked by `RULES` and applied over `defaults`.

    Raises INVALID_ARGUMENT naming the public field when a value is out of range, or when it
    sets a field the servable does not honour (`supported`) to anything but the default.
    """
    changes: dict[str, Any] = {}
    for name, (value, param) in values.items():
        checked = RULES[name](value, param)
        if name not in supported and checked != getattr(_DEFAULTS, name):
            raise invalid(f"{param} is not supported by this model", param)
        changes[name] = checked
    opts = replace(defaults, **changes)
    if opts.min_tokens > opts.max_decode_steps:
        param = values.get("min_tokens", (None, "min_tokens"))[1]
        raise invalid(
            f"{param} ({opts.min_tokens}) must not exceed the maximum new tokens "
            f"({opts.max_decode_steps})",
            param,
        )
    return opts


def sampling_from_extra(
    extra: Mapping[str, Any],
    defaults: SamplingOptions | None = None,
    supported: frozenset[str] = ALL_FIELDS,
) -> SamplingOptions:
    """Applies Saxml `extra` inputs over `defaults`; INVALID_ARGUMENT names the bad key."""
    values: dict[str, tuple[Any, str]] = {}
    for key, value in extra.items():
        name = EXTRA_KEYS.get(key)
        if name is None or name not in supported:
            accepted = sorted(k for k, n in EXTRA_KEYS.items() if n in supported)
            raise invalid(
                f"unknown extra input {key!r}; accepted: {', '.join(accepted)}",
                f"extra_inputs.{key}",
            )
        values[name] = (value, f"extra_inputs.{key}")
    return apply_options(values, defaults or SamplingOptions(), supported)


def extra_input_names(extra: Mapping[str, Any], prompt: str) -> dict[str, str]:
    """SamplingOptions field (and ``prompt``) -> the public field an engine error should name:
    the ``extra_inputs.<key>`` the caller gave, and `prompt` for the request's text."""
    names = {EXTRA_KEYS[k]: f"extra_inputs.{k}" for k in extra if k in EXTRA_KEYS}
    names["prompt"] = prompt
    return names


def no_extra_inputs(extra: Mapping[str, Any], method: str) -> None:
    """For methods that take no extra inputs: any key is INVALID_ARGUMENT naming it."""
    for key in extra:
        raise invalid(f"{method} takes no extra input {key!r}", f"extra_inputs.{key}")
