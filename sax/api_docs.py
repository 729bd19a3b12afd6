"""How both apps present themselves to API consumers.

- Swagger UI at ``/docs`` and ReDoc at ``/redoc`` are served from the ``fastapi-offline``
  package's own copy of their scripts and styles (under ``/static-offline-docs``), never from a
  CDN, so the pages render in an air-gapped cluster.
- Operation ids are the names generated clients give their functions, so they read as calls:
  a Saxml method route is named after its method (``lm.generate`` -> ``lm_generate``), any other
  route after its ``operation_id`` or its handler (``publish``, ``list_models``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline


def operation_id(route: APIRoute) -> str:
    """``lm_generate`` for ``POST /v1/models/{name}/lm.generate``; else the handler's name."""
    last = route.path_format.rsplit("/", 1)[-1]
    if "." in last and "{" not in last:
        return last.replace(".", "_")
    return route.name


def fastapi_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app (`kwargs` as for `FastAPI`) with offline ``/docs`` and ``/redoc`` and
    readable operation ids."""
    return FastAPIOffline(generate_unique_id_function=operation_id, **kwargs)
