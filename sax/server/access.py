"""The gate a data request takes, once the model's ACL for its method admits the caller.

Routes bind a `GateFor` to each request's credentials (`caller_gates`); the serving code asks
it for ``gates(replica, method)`` and never sees HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sax.auth.acl import EVERYONE, Access
from sax.auth.http import bearer_token
from sax.auth.source import AuthSource
from sax.server.admission import Gate
from sax.server.manager import Replica

GateFor = Callable[[Replica, str], Gate]


def acl_method(replica: Replica, method: str, streams_as_generate: bool) -> str:
    """The method whose ACL guards `method`: ``lm.generate_stream`` without an ACL of its own
    is guarded by ``lm.generate``'s (Saxml left it open), and always when
    `streams_as_generate` (OpenAI streams, like the unstreamed calls)."""
    if method == "lm.generate_stream" and (
        streams_as_generate or not replica.spec.acls.get(method)
    ):
        return "lm.generate"
    return method


def caller_gates(
    auth: AuthSource, headers: Mapping[str, str], streams_as_generate: bool = False
) -> GateFor:
    """`gates(replica, method)`: `method`'s gate once the replica's ACL admits the caller whose
    request carried `headers` (PERMISSION_DENIED or UNAUTHENTICATED otherwise). The routers'
    `AuthSource.current` dependency has refreshed the config snapshot already."""

    def gates(replica: Replica, method: str) -> Gate:
        guard = acl_method(replica, method, streams_as_generate)
        acl = replica.spec.acls.get(guard, "")
        if acl not in EVERYONE:
            access = Access(auth.snapshot(), bearer_token(headers))
            access.require_data(replica.model_id, guard, acl)
        return replica.gate(method)

    return gates
