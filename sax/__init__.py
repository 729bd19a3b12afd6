"""sax: a Saxml-style inference serving system.

The client surface lives here so that ``import sax; sax.Model("/sax/test/m")`` works; it is
imported lazily to keep ``import sax.naming`` and friends free of HTTP dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsyncModel",
    "Model",
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
    if name in __all__:
        from sax import client

        return getattr(client, name)
    raise AttributeError(name)
