"""sax: a Saxml-style inference serving system.

The client surface lives here so that ``import sax; sax.Model("/sax/test/m")`` works: the names
of `sax.client` (one table, there), imported on first use, so ``import sax.naming`` and friends
stay free of HTTP dependencies.
"""

from __future__ import annotations

from typing import Any

from sax.client import __all__ as __all__
from sax.client import load as _load


def __getattr__(name: str) -> Any:
    return _load(name, __name__)
