"""Module-level admin calls (Saxml's ``sax.Publish``, ``sax.List``, ...), blocking.

Each is its coroutine twin in `sax.client.async_control` (arguments, defaults, retries and
errors as documented there) run on the process's shared portal; `wait_once` runs on the portal
of the `AdminClient` it is given.
"""

from __future__ import annotations

from sax.client import async_control
from sax.client.faces import blocking, on_shared_portal

publish = on_shared_portal(async_control.publish)
unpublish = on_shared_portal(async_control.unpublish)
update = on_shared_portal(async_control.update)
list = on_shared_portal(async_control.list)
list_all = on_shared_portal(async_control.list_all)
servers = on_shared_portal(async_control.servers)
stats = on_shared_portal(async_control.stats)
wait_for_ready = on_shared_portal(async_control.wait_for_ready)
get_acl = on_shared_portal(async_control.get_acl)
set_acl = on_shared_portal(async_control.set_acl)
wait_once = blocking(async_control.wait_once)
