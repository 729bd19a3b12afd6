"""saxutil's cell and model admin commands: create, ls, publish, unpublish, update,
update_checkpoint, stats, servers, watch, wait."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sax.cli.args import (
    CellArg,
    ModelIdArg,
    Overrides,
    admin_call,
    model_id_arg,
    parse_duration,
    parse_overrides,
    settings,
)
from sax.cli.render import echo_csv, echo_json, echo_result, echo_table, fail, failing, usage
from sax.errors import Code, SaxError

commands = typer.Typer()


@commands.command("create")
def create(
    ctx: typer.Context,
    cell: CellArg,
    fs_root: Annotated[str, typer.Argument(help="where the admin keeps state (dir or gs://)")],
    admin_acl: Annotated[str, typer.Argument(help="admin ACL: a principal or group")] = "",
) -> None:
    """Create a Sax cell."""
    from sax.naming import CellId
    from sax.schemas import CellConfig
    from sax.store import CellStore

    with failing("Invalid cell name"):
        cell_id = CellId.parse(cell)
    store = CellStore(settings(ctx).root(), cell_id)
    try:
        store.create(CellConfig(fs_root=fs_root, admin_acl=admin_acl), exist_ok=False)
    except SaxError as exc:
        if exc.code == Code.ALREADY_EXISTS:
            fail(f"Sax cell {cell_id} already exists.")
        fail(f"Failed to create Sax cell {cell_id}: {exc}")


@commands.command("ls")
def ls(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="/sax, /sax/<cell> or /sax/<cell>/<model>")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Output the results as CSV.")] = False,
) -> None:
    """List published models."""
    from sax.client import direct
    from sax.naming import CellId, ModelId

    out = echo_csv if as_csv else echo_table
    if target.rstrip("/") == "/sax":
        from sax.store import list_cells

        with failing("Failed to list all cells"):
            cells = list_cells(settings(ctx).root())
        if as_json:
            echo_json({"cells": cells})
        else:
            out(["#", "Cell"], [[i, c] for i, c in enumerate(cells)])
        return
    try:
        cell = CellId.parse(target)
    except SaxError:
        try:
            model = ModelId.parse(target)
        except SaxError as exc:
            fail(f"Invalid model ID {target}: {exc}")
        show_model(admin_call(ctx, "Failed to list model", direct.get, str(model)), as_json, out)
        return
    models = admin_call(ctx, "Failed to list models", direct.list_all, str(cell))
    if as_json:
        echo_json({"models": [model_json(m) for m in models]})
        return
    prefix = f"{cell}/"
    out(["#", "Model ID"], [[i, m["model_id"].removeprefix(prefix)] for i, m in enumerate(models)])


def model_json(raw: dict[str, Any]) -> Any:
    """The admin's `ModelInfo` JSON object as the client's model dumps it (every field, in
    schema order)."""
    from sax.schemas import ModelInfo

    return ModelInfo.model_validate(raw).model_dump(mode="json")


def show_model(
    raw: dict[str, Any], as_json: bool, out: Callable[[list[str], list[list[Any]]], None]
) -> None:
    """The model table (Saxml's columns; the selected address is a LOADED replica), its ACLs
    and, beyond Saxml, each replica's status and why fewer are ready than requested. `raw`:
    the admin's `ModelInfo` JSON object."""
    if as_json:
        echo_json(model_json(raw))
        return
    replicas: list[dict[str, Any]] = raw.get("replicas", [])
    loaded = [r["address"] for r in replicas if r.get("status") == "LOADED"]
    out(
        [
            "Model",
            "Model Path",
            "Checkpoint Path",
            "# of Replicas",
            "(Selected) ReplicaAddress",
            "Methods",
        ],
        [
            [
                raw["model_id"].rsplit("/", 1)[-1],
                raw["model_path"],
                raw["checkpoint_path"],
                len(replicas),
                random.choice(loaded) if loaded else "",
                ", ".join(raw.get("methods", [])),
            ]
        ],
    )
    out(["Method", "ACL"], [[m, a] for m, a in sorted(raw.get("acls", {}).items())])
    out(
        ["Replica Address", "Status", "Failure Reason"],
        [[r["address"], r.get("status") or "", r.get("failure_reason", "")] for r in replicas],
    )
    typer.echo(f"Ready replicas: {raw.get('ready_replicas', 0)}/{raw['num_replicas']} requested")
    if raw.get("reason"):
        typer.echo(f"Reason: {raw['reason']}")


@commands.command("publish")
def publish(
    ctx: typer.Context,
    model_id: ModelIdArg,
    model_path: Annotated[
        str, typer.Argument(help="registered servable, e.g. sax.models.test.Echo")
    ],
    checkpoint_path: Annotated[
        str, typer.Argument(help="checkpoint dir or gs:// URL; None = random")
    ],
    num_replicas: Annotated[int, typer.Argument(help="number of replicas")],
    overrides: Overrides = None,
) -> None:
    """Publish a model."""
    from sax.client import direct

    model = model_id_arg(model_id)
    values = parse_overrides(overrides)
    admin_call(
        ctx,
        "Failed to publish model",
        direct.publish,
        model,
        model_path,
        checkpoint_path,
        num_replicas,
        values,
    )


@commands.command("unpublish")
def unpublish(ctx: typer.Context, model_id: ModelIdArg) -> None:
    """Unpublish a model."""
    from sax.client import direct

    admin_call(ctx, "Failed to unpublish model", direct.unpublish, model_id_arg(model_id))


@commands.command("update")
def update(
    ctx: typer.Context,
    model_id: ModelIdArg,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=val overrides merged into the current ones")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="Number of replicas for this model.")
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", "--checkpoint_path", "--checkpoint-path", help="new checkpoint"
        ),
    ] = None,
) -> None:
    """Update a model."""
    from sax import client

    model = model_id_arg(model_id)
    values = parse_overrides(overrides)
    if replicas is None and checkpoint is None and not values:
        usage("Nothing to update: give --replicas, --checkpoint or key=val overrides")
    if replicas is not None and replicas < 0:
        fail("Num replicas must be non-negative.")
    what = "Failed to update model"
    merged = None
    if values:
        merged = {**admin_call(ctx, what, client.list, model).overrides, **values}
    admin_call(
        ctx,
        what,
        client.update,
        model,
        num_replicas=replicas,
        checkpoint_path=checkpoint,
        overrides=merged,
    )


@commands.command("update_checkpoint")
def update_checkpoint(
    ctx: typer.Context,
    model_id: ModelIdArg,
    checkpoint_path: Annotated[str, typer.Argument(help="new checkpoint path")],
) -> None:
    """Update a model's checkpoint path."""
    from sax import client

    model = model_id_arg(model_id)
    admin_call(ctx, "Failed to update model", client.update, model, checkpoint_path=checkpoint_path)


@commands.command("stats")
def stats(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(help="/sax/<cell> or /sax/<cell>/<model>; default: --sax_cell"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show server counts by chip and topology for a cell or a model."""
    from sax import client

    if target is None:
        target = settings(ctx).default_cell()
    result = admin_call(ctx, "Failed to get stats", client.stats, target)
    if as_json:
        echo_json(result.model_dump(mode="json"))
        return
    echo_table(
        ["Chip", "Topology", "# of Servers"],
        [[t.chip, t.topology, t.num_servers] for t in result.server_types],
    )
    echo_table(
        ["Model Path", "# of Servers"],
        [[p, n] for p, n in sorted(result.servers_by_model_path.items())],
    )


@commands.command("servers")
def servers(
    ctx: typer.Context,
    cell: Annotated[str | None, typer.Argument(help="/sax/<cell>; default: --sax_cell")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the model servers joined to a cell."""
    from sax import client

    found = admin_call(
        ctx, "Failed to list servers", client.servers, cell or settings(ctx).default_cell()
    )
    echo_result(
        as_json,
        {"servers": [x.model_dump(mode="json") for x in found]},
        ["Address", "Data Address", "Chip", "Topology", "Models", "Last Join"],
        [
            [
                x.address,
                x.data_address,
                x.chip,
                x.topology,
                ", ".join(f"{m.model_id} ({m.status})" for m in x.models),
                f"{x.seconds_since_last_join:.1f}s ago",
            ]
            for x in sorted(found, key=lambda x: x.address)
        ],
    )


@commands.command("watch")
def watch(ctx: typer.Context, model_id: ModelIdArg) -> None:
    """Watch addresses of a model (until Ctrl-C or the model is unpublished)."""
    import threading

    from sax.client.admin import AdminClient
    from sax.client.locations import print_changes, watch_forever
    from sax.naming import ModelId

    s = settings(ctx)
    model = ModelId.parse(model_id_arg(model_id))
    seen = threading.Event()
    printer = print_changes(lambda line: typer.echo(line))

    def on_result(result: Any) -> None:
        seen.set()
        printer(result)
        sys.stdout.flush()

    try:
        error = watch_forever(
            AdminClient(s.root(), model.cell_id), model, on_result, threading.Event()
        )
    except KeyboardInterrupt:
        return
    if error.code == Code.NOT_FOUND and seen.is_set():
        typer.echo(f"{model} was unpublished", err=True)
        return
    fail(f"WatchAddresses({model}) error: {error}")


@commands.command("wait")
def wait(
    ctx: typer.Context,
    model_id: ModelIdArg,
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", help="ready replicas to wait for; default: requested"),
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="seconds or a duration; default: --sax_timeout")
    ] = None,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail_fast", "--fail-fast", help="exit 1 as soon as a replica's load fails"),
    ] = False,
) -> None:
    """Wait until a model has enough LOADED replicas, showing progress."""
    from sax import client
    from sax.client.admin import AdminClient
    from sax.client.control import wait_once
    from sax.client.retry import Deadline
    from sax.naming import ModelId
    from sax.schemas import ReplicaStatus

    s = settings(ctx)
    model = ModelId.parse(model_id_arg(model_id))
    limit = parse_duration(timeout) if timeout is not None else s.timeout_s
    deadline = Deadline.after(limit)
    admin = AdminClient(s.root(), model.cell_id)
    shown = ""
    with failing(f"Failed to wait for {model}"):
        while True:
            info = client.list(str(model), sax_root=s.root(), timeout=deadline.cap(30.0) or 1.0)
            want = info.num_replicas if replicas is None else replicas
            statuses = ", ".join(f"{r.address} {r.status or 'ASSIGNED'}" for r in info.replicas)
            line = f"{model}: {info.ready_replicas}/{want} ready" + (
                f" ({statuses})" if statuses else ""
            )
            if info.reason and info.ready_replicas < want:
                line += f"; {info.reason}"
            if info.ready_replicas >= want:
                typer.echo(f"{model}: ready ({info.ready_replicas}/{want} replicas)")
                return
            if line != shown:
                typer.echo(line)
                shown = line
            failed = [r for r in info.replicas if r.status is ReplicaStatus.FAILED]
            if fail_fast and failed:
                fail(f"{model} failed to load on {failed[0].address}: {failed[0].failure_reason}")
            if deadline.expired():
                fail(
                    f"Timed out after {limit:g}s waiting for {want} ready replicas of {model}: "
                    f"{info.ready_replicas}/{want} ready"
                )
            wait_once(admin, model, want, deadline.cap(1.0))
