"""Module-level admin calls (Saxml's ``sax.Publish``, ``sax.List``, ...) as coroutines;
`sax.client.control` runs them for blocking callers (``sax.publish``, ...).

Every function takes `sax_root` (default: the SAX_ROOT environment variable) and `timeout` in
seconds (default 60, saxutil's; None or <= 0 means no deadline); the mutations take `token`, the
caller's bearer token (default: `sax.client.credentials`), checked against the cell's and model's
admin ACLs (UNAUTHENTICATED, PERMISSION_DENIED). Retryable admin errors
(UNAVAILABLE, RESOURCE_EXHAUSTED) are retried until then, following the leader through
``location.json``; anything else raises `SaxError` with the admin's code and message.
"""

# `timeout`: a deadline shared by all retries of one call, as in `sax.client.async_model`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from typing import Any

from sax.client.admin import DEFAULT_ADMIN_TIMEOUT_S, AsyncAdminClient, resolve_sax_root
from sax.client.retry import Deadline
from sax.errors import Code, SaxError
from sax.naming import CellId, ModelId, parse_cell_or_model
from sax.schemas import (
    CellStats,
    ModelInfo,
    ModelList,
    PublishRequest,
    ServerInfo,
    ServerList,
    ServerTypeStat,
    UpdateRequest,
    WaitResponse,
)

MAX_WAIT_POLL_S = 30.0  # one :wait request; longer waits are several


def _admin(cell: CellId, sax_root: str | None, token: str | None = None) -> AsyncAdminClient:
    return AsyncAdminClient(sax_root, cell, token)


async def _get(cell: CellId, path: str, sax_root: str | None, timeout: float | None) -> Any:
    return await _admin(cell, sax_root).request("GET", path, deadline=Deadline.after(timeout))


async def publish(
    model_id: str,
    model_path: str,
    checkpoint_path: str,
    num_replicas: int,
    overrides: Mapping[str, Any] | None = None,
    acls: Mapping[str, str] | None = None,
    admin_acl: str = "",
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> ModelInfo:
    """Publishes a model; durable on the admin when this returns."""
    model = ModelId.parse(model_id)
    request = PublishRequest(
        model_id=str(model),
        model_path=model_path,
        checkpoint_path=checkpoint_path,
        num_replicas=num_replicas,
        overrides=dict(overrides or {}),
        acls=dict(acls or {}),
        admin_acl=admin_acl,
    )
    raw = await _admin(model.cell_id, sax_root, token).request(
        "POST", "/v1/models", body=request.model_dump(), deadline=Deadline.after(timeout)
    )
    return ModelInfo.model_validate(raw)


async def unpublish(
    model_id: str,
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> None:
    model = ModelId.parse(model_id)
    await _admin(model.cell_id, sax_root, token).request(
        "DELETE", f"/v1/models/{model.name}", deadline=Deadline.after(timeout)
    )


async def update(
    model_id: str,
    *,
    num_replicas: int | None = None,
    checkpoint_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    acls: Mapping[str, str] | None = None,
    admin_acl: str | None = None,
    model_path: str | None = None,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> ModelInfo:
    """Changes only the fields given (unlike Saxml's ``Update``, ACLs are never dropped).
    `model_path` may be given but must equal the published one."""
    model = ModelId.parse(model_id)
    request = UpdateRequest(
        model_path=model_path,
        checkpoint_path=checkpoint_path,
        num_replicas=num_replicas,
        overrides=dict(overrides) if overrides is not None else None,
        acls=dict(acls) if acls is not None else None,
        admin_acl=admin_acl,
    )
    raw = await _admin(model.cell_id, sax_root, token).request(
        "PATCH",
        f"/v1/models/{model.name}",
        body=request.model_dump(exclude_none=True),
        deadline=Deadline.after(timeout),
    )
    return ModelInfo.model_validate(raw)


async def list(
    model_id: str, *, sax_root: str | None = None, timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S
) -> ModelInfo:
    """One published model: paths, requested and ready replicas, each replica's status.

    Saxml's ``sax.List``; it shadows the builtin only inside this module (hence `builtins.list`).
    """
    model = ModelId.parse(model_id)
    raw = await _admin(model.cell_id, sax_root).request(
        "GET", f"/v1/models/{model.name}", deadline=Deadline.after(timeout)
    )
    return ModelInfo.model_validate(raw)


async def list_all(
    cell: str, *, sax_root: str | None = None, timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S
) -> builtins.list[ModelInfo]:
    """Every model published in `cell` (``/sax/<cell>``), sorted by model id."""
    raw = await _get(CellId.parse(cell), "/v1/models", sax_root, timeout)
    return sorted(ModelList.model_validate(raw).models, key=lambda m: m.model_id)


async def servers(
    cell: str, *, sax_root: str | None = None, timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S
) -> builtins.list[ServerInfo]:
    """The model servers joined to `cell`'s admin, with the models each holds."""
    raw = await _get(CellId.parse(cell), "/v1/servers", sax_root, timeout)
    return ServerList.model_validate(raw).servers


async def stats(
    cell_or_model: str,
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
) -> CellStats:
    """Server counts by chip and topology for a cell, or for the servers holding a model
    (Saxml's ``Stats(id)``); computed from ``/v1/servers`` for a model."""
    target = parse_cell_or_model(cell_or_model)
    if isinstance(target, CellId):
        return CellStats.model_validate(await _get(target, "/v1/stats", sax_root, timeout))
    holding = [
        s
        for s in await servers(str(target.cell_id), sax_root=sax_root, timeout=timeout)
        if any(m.model_id == str(target) for m in s.models)
    ]
    counts: dict[tuple[str, str], int] = {}
    by_path: dict[str, int] = {}
    for server in holding:
        key = (server.chip, server.topology)
        counts[key] = counts.get(key, 0) + 1
        for m in server.models:
            if m.model_id == str(target):
                by_path[m.model_path] = by_path.get(m.model_path, 0) + 1
    return CellStats(
        server_types=[
            ServerTypeStat(chip=chip, topology=topo, num_servers=n)
            for (chip, topo), n in sorted(counts.items())
        ],
        servers_by_model_path=by_path,
        num_servers=len(holding),
        num_models=1,
    )


async def wait_for_ready(
    model_id: str,
    num_replicas: int = 1,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    *,
    sax_root: str | None = None,
) -> int:
    """Waits until at least `num_replicas` replicas are LOADED; returns how many are.

    Raises DEADLINE_EXCEEDED when `timeout` passes first, NOT_FOUND if the model is not published.
    """
    model = ModelId.parse(model_id)
    deadline = Deadline.after(timeout)
    admin = _admin(model.cell_id, sax_root)
    while True:
        ready = await wait_once(admin, model, num_replicas, deadline.cap(MAX_WAIT_POLL_S))
        if ready is not None:
            return ready
        if deadline.expired():
            raise SaxError(
                Code.DEADLINE_EXCEEDED,
                f"{model} has fewer than {num_replicas} ready replicas after {timeout}s",
            )


async def wait_once(
    admin: AsyncAdminClient, model: ModelId, num_replicas: int, poll_s: float
) -> int | None:
    """One bounded :wait; None when the admin's own wait ran out (504) before enough were ready."""
    poll_s = max(poll_s, 0.05)
    try:
        raw = await admin.request(
            "POST",
            f"/v1/models/{model.name}:wait",
            body={"num_replicas": num_replicas, "timeout_s": poll_s},
            deadline=Deadline.after(poll_s + 10.0),
        )
    except SaxError as exc:
        if exc.code == Code.DEADLINE_EXCEEDED:
            return None
        raise
    return WaitResponse.model_validate(raw).ready_replicas


async def get_acl(
    cell_or_model: str,
    method: str = "",
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
) -> str | dict[str, str]:
    """Saxml's ``GetACL``: a cell's admin ACL (read from its config.json), a model's admin ACL
    (`method` ""), its method -> ACL map (`method` "all"), or one method's ACL ("" = none)."""
    target = parse_cell_or_model(cell_or_model)
    if isinstance(target, CellId):
        if method:
            raise SaxError(Code.INVALID_ARGUMENT, "a cell has no method ACLs, only an admin ACL")
        from sax.store import CellStore

        store = CellStore(resolve_sax_root(sax_root), target)
        return (await asyncio.to_thread(store.read_config)).admin_acl
    info = await list(str(target), sax_root=sax_root, timeout=timeout)
    if not method:
        return info.admin_acl
    if method == "all":
        return dict(info.acls)
    return info.acls.get(method, "")


async def set_acl(
    cell_or_model: str,
    acl: str,
    method: str = "",
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> None:
    """Saxml's ``SetACL``: a cell's admin ACL (rewrites its config.json directly, as the original
    did), a model's admin ACL (`method` ""), or one method's ACL (an empty `acl` removes it)."""
    target = parse_cell_or_model(cell_or_model)
    if isinstance(target, CellId):
        if method:
            raise SaxError(Code.INVALID_ARGUMENT, "a cell has no method ACLs, only an admin ACL")
        from sax.auth.principals import edit_config, set_admin_acl
        from sax.store import CellStore

        store = CellStore(resolve_sax_root(sax_root), target)
        await asyncio.to_thread(edit_config, store, lambda config: set_admin_acl(config, acl))
        return
    if not method:
        await update(str(target), admin_acl=acl, sax_root=sax_root, timeout=timeout, token=token)
        return
    acls = dict((await list(str(target), sax_root=sax_root, timeout=timeout)).acls)
    if acl:
        acls[method] = acl
    else:
        acls.pop(method, None)
    await update(str(target), acls=acls, sax_root=sax_root, timeout=timeout, token=token)
