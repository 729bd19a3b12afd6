"""The ``Allow`` header of a 405 reply lists every method the path serves (RFC 9110).

Starlette answers 405 from the first route whose path matched, so a path served by several
routes (``GET`` and ``POST /v1/models``) would advertise only one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope


def error_headers(exc: HTTPException, routes: Iterable[BaseRoute], scope: Scope) -> dict[str, str]:
    """The headers of the reply to `exc`: its own, with a 405's ``Allow`` made complete."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(routes, scope)
    return headers


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """``"GET, POST"``: the sorted union of the methods of the routes whose template
    matches the request's path in `scope` most specifically (most literal characters: the path
    ``/v1/models/m:wait`` is the ``{name}:wait`` resource, though ``{name}`` matches it too);
    ``""`` when none matches."""
    matching = [
        route
        for route in routes
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE
    ]
    if not matching:
        return ""
    best = max(_literal_chars(r.path_format) for r in matching)
    methods: set[str] = set()
    for route in matching:
        if _literal_chars(route.path_format) == best:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _literal_chars(path_format: str) -> int:
    return len(re.sub(r"\{[^}]*\}", "", path_format))
