"""A request that failed schema validation, as one INVALID_ARGUMENT naming the field.

Both apps answer FastAPI's `RequestValidationError` with this instead of its 422: the message
lists every problem, `param` is the first offending field as a dotted path without the
``body``/``query``/``path`` prefix (``temperature``, ``messages.0.role``). `public_params`
renames the internal field an engine error names to the one the caller wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sax.errors import SaxError, invalid

# Location segments pydantic adds for union branches and validators, not fields a caller wrote.
_TYPE_SEGMENTS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "literal"})


def _is_field(segment: Any) -> bool:
    if isinstance(segment, int):
        return True
    text = str(segment)
    return (
        text not in ("body", "query", "path")
        and text not in _TYPE_SEGMENTS
        and not any(c in text for c in "[](){}")
    )


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as the field path a caller wrote (``messages.0.role``),
    without union-branch markers; ``body`` for the whole body."""
    return ".".join(str(p) for p in loc if _is_field(p)) or "body"


def _describe(err: Mapping[str, Any]) -> str:
    kind, loc = err.get("type", ""), tuple(err.get("loc", ()))
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "JSON decode error")
        return f"malformed JSON body: {detail} at position {loc[-1] if loc else '?'}"
    if kind == "extra_forbidden":
        return f"unknown field {field_path(loc)!r}"
    if kind == "missing":
        return f"missing field {field_path(loc)!r}"
    return f"{field_path(loc)}: {err.get('msg', 'invalid')}"


def validation_error(errors: Iterable[Mapping[str, Any]]) -> SaxError:
    """INVALID_ARGUMENT listing `errors` (pydantic's), with `param` the first bad field."""
    # A value that fits no branch of a union fails once per branch: report its field once.
    errs, seen = [], set()
    for err in errors:
        key = (field_path(tuple(err.get("loc", ()))), err.get("type") == "json_invalid")
        if key not in seen:
            seen.add(key)
            errs.append(err)
    message = "; ".join(_describe(e) for e in errs) or "invalid request"
    param = None
    if errs and errs[0].get("type") != "json_invalid":
        param = field_path(tuple(errs[0].get("loc", ())))
    return invalid(message, param)


@contextlib.contextmanager
def public_params(names: Mapping[str, str]) -> Iterator[None]:
    """Renames the `param` of a `SaxError` raised inside from an internal name (a
    `SamplingOptions` field, ``prompt``) to the public field the caller wrote."""
    try:
        yield
    except SaxError as exc:
        if exc.param is not None and exc.param in names:
            exc.param = names[exc.param]
        raise
