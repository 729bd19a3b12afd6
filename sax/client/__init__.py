"""The sax Python client: talk to a cell's admin, and to model replicas directly.

Data calls (`AsyncModel`, and `Model`, which runs it for blocking callers; ``Model(...).aio``
is its asyncio twin) find replicas through a background WatchLoc watcher, pick one by the
prompt's prefix (so a shared system prompt meets its prefix cache) or by load, and retry with
jittered backoff on another replica until the caller's deadline. Admin calls (`publish`, `unpublish`, `update`, `list`, `list_all`, `stats`,
`servers`, `wait_for_ready`, `get_acl`, `set_acl`) find the leader through
``<sax_root>/sax/<cell>/location.json`` and follow it when it moves. Failures raise
`sax.errors.SaxError` with a canonical code. Credentials: a `token` argument, else
``SAX_TOKEN`` (`sax.client.credentials`).

Names are imported on first use, so the admin calls load without the data client and its
response models, and ``import sax`` loads nothing. `sax.client.direct` makes the same calls
without an event loop or pydantic for a process that makes one call and exits (saxutil). `close` stops every blocking
client's loop thread, watchers and connections (each starts again on its next call).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time, `_HOMES`
    from sax.client.async_model import AsyncGenerateStream, AsyncModel  # noqa: F401
    from sax.client.control import (  # noqa: F401
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
    from sax.client.model import GenerateStream, Model  # noqa: F401
    from sax.client.portal import close  # noqa: F401
    from sax.errors import Code, SaxError  # noqa: F401

# The public names and the modules that hold them: the one table of `sax` and `sax.client`.
_HOMES = {
    "AsyncGenerateStream": "sax.client.async_model",
    "AsyncModel": "sax.client.async_model",
    "Code": "sax.errors",
    "GenerateStream": "sax.client.model",
    "Model": "sax.client.model",
    "SaxError": "sax.errors",
    "close": "sax.client.portal",
    "get_acl": "sax.client.control",
    "list": "sax.client.control",
    "list_all": "sax.client.control",
    "publish": "sax.client.control",
    "servers": "sax.client.control",
    "set_acl": "sax.client.control",
    "stats": "sax.client.control",
    "unpublish": "sax.client.control",
    "update": "sax.client.control",
    "wait_for_ready": "sax.client.control",
}

__all__ = sorted(_HOMES)


def load(name: str, module: str) -> Any:
    """The public client name `name`, importing its home on first use; AttributeError, naming
    `module` (the one asked), if there is no such name."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __getattr__(name: str) -> Any:
    value = load(name, __name__)
    globals()[name] = value
    return value
