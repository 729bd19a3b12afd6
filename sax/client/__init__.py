"""The sax Python client: talk to a cell's admin, and to model replicas directly.

Data calls (`Model` blocking, `AsyncModel` / ``Model(...).aio`` for asyncio) find replicas through a
background WatchLoc watcher, spread load with power-of-two choices, and retry with jittered
backoff on another replica until the caller's deadline. Admin calls (`publish`, `unpublish`,
`update`, `list`, `list_all`, `stats`, `servers`, `wait_for_ready`, `get_acl`, `set_acl`) find the leader through
``<sax_root>/sax/<cell>/location.json`` and follow it when it moves. Failures raise
`sax.errors.SaxError` with a canonical code. Credentials: a `token` argument, else
``SAX_TOKEN`` (`sax.client.credentials`).
"""

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
from sax.errors import Code, SaxError

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
