"""One model's set of ready replica addresses and where its WatchLoc stream stands.

The state half of WatchLoc, shared by the asyncio watcher (`sax.client.locations`), the retry
and failover decisions (`sax.client.attempts`) and the blocking one-shot calls
(`sax.client.direct`); it imports neither an event loop nor the schema module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sax.errors import Code, SaxError
from sax.naming import ModelId

if TYPE_CHECKING:
    from sax.schemas import WatchResult

POLL_DEADLINE_S = 45.0  # the admin holds a poll for at most 30 s
PERMANENT = frozenset(
    {Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION}
)


class ReplicaSet:
    """The ready addresses of one model. Readers take `addresses` without a lock: it is an
    immutable tuple that `apply` replaces whole."""

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ()
        self.error: SaxError | None = None
        self.updates = 0  # results applied; 0 = nothing known yet

    def apply(self, result: WatchResult) -> None:
        self.update(
            result.values if result.has_fullset else None,
            ((m.op, m.address) for m in result.changelog),
        )

    def update(self, values: Sequence[str] | None, changes: Iterable[tuple[str, str]]) -> None:
        """Replaces the set with `values` (a full set; None keeps the current one), then applies
        `changes`, ``("add" | "del", address)`` pairs, in order."""
        current = set(self.addresses if values is None else values)
        for op, address in changes:
            if op == "add":
                current.add(address)
            else:
                current.discard(address)
        self.addresses = tuple(sorted(current))
        self.updates += 1

    def fail(self, error: SaxError) -> None:
        self.error = error


def locations_path(model: ModelId) -> str:
    return f"/v1/models/{model.name}/locations"


@dataclass
class WatchState:
    """Where the loop is in the admin's changelog; `reset` after any error forces a full set."""

    admin_id: str = ""
    seqno: int = 0

    def params(self) -> dict[str, str | int]:
        return {"admin_id": self.admin_id, "seqno": self.seqno}

    def advance(self, result: WatchResult) -> None:
        self.admin_id = result.admin_id
        self.seqno = result.next_seqno

    def reset(self) -> None:
        self.admin_id, self.seqno = "", 0
