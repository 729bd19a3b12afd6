"""The sax Python client: talk to a cell's admin, and to model replicas directly.

Data calls (`Model` blocking, `AsyncModel` / ``Model(...).aio`` for asyncio) find replicas through a
background WatchLoc watcher, pick one by the prompt's prefix (so a shared system prompt meets
its prefix cache) or by load, and retry with jittered backoff on another replica until the
caller's deadline. Admin calls (`publish`, `unpublish`, `update`, `list`, `list_all`, `stats`,
`servers`, `wait_for_ready`, `get_acl`, `set_acl`) find the leader through
``<sax_root>/sax/<cell>/location.json`` and follow it when it moves. Failures raise
`sax.errors.SaxError` with a canonical code. Credentials: a `token` argument, else
``SAX_TOKEN`` (`sax.client.credentials`).

Names are imported on first use, so ``saxutil ls`` loads the admin calls without the data
client and its response models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sax.errors import Code, SaxError

if TYPE_CHECKING:
    from sax.client.async_model import AsyncGenerateStream, AsyncModel
    from sax.client.control import (
        get_acl,
        list,
        list_all,
        publish,
        servers,
        set_acl,
        stats,
        unpublish,
        update,
        wait_for_ready,
    )
    from sax.client.model import GenerateStream, Model, close

_HOMES = {
    "AsyncGenerateStream": "sax.client.async_model",
    "AsyncModel": "sax.client.async_model",
    "GenerateStream": "sax.client.model",
    "Model": "sax.client.model",
    "close": "sax.client.model",
    **dict.fromkeys(
        (
            "get_acl",
            "list",
            "list_all",
            "publish",
            "servers",
            "set_acl",
            "stats",
            "unpublish",
            "update",
            "wait_for_ready",
        ),
        "sax.client.control",
    ),
}

__all__ = [
    "AsyncGenerateStream",
    "AsyncModel",
    "Code",
    "GenerateStream",
    "Model",
    "SaxError",
    "close",
    "get_acl",
    "list",
    "list_all",
    "publish",
    "servers",
    "set_acl",
    "stats",
    "unpublish",
    "update",
    "wait_for_ready",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sax.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
