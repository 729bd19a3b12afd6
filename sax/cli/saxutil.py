"""``saxutil``: Saxml's command-line tool, seed syntax verbatim.

    saxutil [--sax_root=DIR|gs://...] [--sax_timeout=60s] <command> [flags] <args>

Results go to stdout; errors go to stderr as ``Error: <what failed>: <CODE>: <message>``.
Exit codes: 0 success, 1 failure, 2 usage error (wrong argument count, bad flag, unknown command).
Flags take underscores or dashes (``--sax_root``, ``--sax-root``), Go's single dash
(``-stream``, ``-extra=...``), and the global flags may also come after the command. Saxml's
quirks are fixed on purpose: ``lm.score`` prints one score per suffix, ``update`` without
``--replicas`` changes only what is given, tables list gradients in name order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from sax.cli import render
from sax.errors import Code, SaxError

HELP = "Saxml command-line tool: manage a cell's models and query them."
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=HELP,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_TIMEOUT = "60s"


# ---------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class Settings:
    sax_root: str
    timeout_s: float
    sax_cell: str = ""

    def root(self) -> str:
        if not self.sax_root:
            fail("Neither the sax_root flag nor the SAX_ROOT environment variable is set")
        return self.sax_root

    def default_cell(self) -> str:
        """--sax_cell, else the only cell under sax_root; a usage error when that is ambiguous."""
        if self.sax_cell:
            return self.sax_cell
        from sax.store import list_cells

        cells = list_cells(self.root())
        if len(cells) != 1:
            usage(f"Provide a cell (cells under sax_root: {', '.join(cells) or 'none'})")
        return f"/sax/{cells[0]}"


def fail(message: str) -> NoReturn:
    """Exit 1 with ``Error: message`` on stderr."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def usage(message: str) -> NoReturn:
    """Exit 2 (usage error) with ``Error: message`` on stderr."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def failing(what: str) -> Iterator[None]:
    """Turns a `SaxError` into ``Error: <what>: <CODE>: <message>`` and exit 1."""
    try:
        yield
    except SaxError as exc:
        fail(f"{what}: {exc}")


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"1.5"`` or a Go duration (``"60s"``, ``"1m30s"``, ``"500ms"``)."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise typer.BadParameter(f"invalid duration {text!r} (e.g. 60s, 1m30s, 500ms)")
    return total


def parse_extra(text: str) -> dict[str, float | int | str]:
    """Saxml's ``-extra="k1:v1,k2:v2"``: quoted values are strings, numbers are numbers, anything
    else a string. Raises INVALID_ARGUMENT on a piece without exactly one ``:``."""
    extra: dict[str, float | int | str] = {}
    if not text:
        return extra
    for piece in text.split(","):
        parts = piece.split(":")
        if len(parts) != 2:
            raise SaxError(
                Code.INVALID_ARGUMENT,
                f"key-value pair for an extra input must be separated by ':', but found '{text}'",
            )
        key, value = parts
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            extra[key] = value[1:-1]
            continue
        try:
            number = float(value)
        except ValueError:
            extra[key] = value
            continue
        if number != number or number in (float("inf"), float("-inf")):
            extra[key] = value  # JSON has no NaN or infinity
        elif re.fullmatch(r"[+-]?\d+", value.strip()):
            extra[key] = int(value)
        else:
            extra[key] = number
    return extra


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=val`` pairs; a value that parses as JSON is that JSON, else the raw string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            usage("Overrides should be of the form key=val")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def extra_option(extra: str) -> dict[str, float | int | str]:
    try:
        return parse_extra(extra)
    except SaxError as exc:
        typer.echo(f"Could not parse extra inputs: {exc}", err=True)
        raise typer.Exit(1) from exc


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    typer.echo(render.table(headers, rows), nl=False)


def echo_csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Saxml's ``--csv`` layout (``# `` + header keys), but properly quoted."""
    out = io.StringIO()
    out.write("# ")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[str(c) for c in row] for row in rows])
    typer.echo(out.getvalue(), nl=False)


def model_id_arg(text: str) -> str:
    from sax.naming import ModelId

    try:
        return str(ModelId.parse(text))
    except SaxError as exc:
        fail(f"Invalid model ID {text}, should be /sax/<cell>/<model>: {exc}")


def open_model(ctx: typer.Context, model_id: str) -> Any:
    from sax.client import Model

    s = settings(ctx)
    with failing("Failed to open model"):
        return Model(model_id_arg(model_id), sax_root=s.root(), timeout=s.timeout_s)


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        fail(f"Failed to read file ({path}) due to {exc}")


# ---------------------------------------------------------------- global flags, help


@app.callback()
def main_options(
    ctx: typer.Context,
    sax_root: Annotated[
        str,
        typer.Option("--sax_root", "--sax-root", envvar="SAX_ROOT", help="sax root: dir or gs://"),
    ] = "",
    sax_timeout: Annotated[
        str,
        typer.Option(
            "--sax_timeout",
            "--sax-timeout",
            help='Command timeout. Defaults to "60s". Seconds or a Go duration (90s, 1m30s).',
        ),
    ] = DEFAULT_TIMEOUT,
    sax_cell: Annotated[
        str,
        typer.Option("--sax_cell", "--sax-cell", help="default cell for stats and servers"),
    ] = "",
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="SAX_TOKEN",
            help="bearer token for cells with auth on (prefer the SAX_TOKEN variable)",
        ),
    ] = "",
) -> None:
    from sax.client.credentials import set_default_token

    set_default_token(token or None)
    ctx.obj = Settings(sax_root=sax_root, timeout_s=parse_duration(sax_timeout), sax_cell=sax_cell)


@app.command("help")
def help_command(
    ctx: typer.Context, command: Annotated[str | None, typer.Argument()] = None
) -> None:
    """Show general help or help about a particular command."""
    root = ctx.find_root()
    if command is None:
        typer.echo(root.get_help())
        return
    sub = root.command.get_command(root, command)  # type: ignore[attr-defined]
    if sub is None:
        usage(f"Subcommand {command} not understood")
    with type(root)(sub, info_name=command, parent=root) as sub_ctx:
        typer.echo(sub.get_help(sub_ctx))


# ---------------------------------------------------------------- cell and model admin


@app.command("create")
def create(
    ctx: typer.Context,
    cell: Annotated[str, typer.Argument(help="/sax/<cell>")],
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


@app.command("ls")
def ls(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="/sax, /sax/<cell> or /sax/<cell>/<model>")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Output the results as CSV.")] = False,
) -> None:
    """List published models."""
    from sax import client
    from sax.naming import CellId, ModelId
    from sax.store import list_cells

    s = settings(ctx)
    out = echo_csv if as_csv else echo_table
    if target.rstrip("/") == "/sax":
        with failing("Failed to list all cells"):
            cells = list_cells(s.root())
        if as_json:
            print_json({"cells": cells})
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
        with failing("Failed to list model"):
            info = client.list(str(model), sax_root=s.root(), timeout=s.timeout_s)
        show_model(info, as_json, out)
        return
    with failing("Failed to list models"):
        models = client.list_all(str(cell), sax_root=s.root(), timeout=s.timeout_s)
    if as_json:
        print_json({"models": [m.model_dump(mode="json") for m in models]})
        return
    prefix = f"{cell}/"
    out(["#", "Model ID"], [[i, m.model_id.removeprefix(prefix)] for i, m in enumerate(models)])


def show_model(info: Any, as_json: bool, out: Any) -> None:
    """The model table (Saxml's columns; the selected address is a LOADED replica), its ACLs
    and, beyond Saxml, each replica's status and why fewer are ready than requested."""
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    loaded = [r.address for r in info.replicas if r.status == "LOADED"]
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
                info.model_id.rsplit("/", 1)[-1],
                info.model_path,
                info.checkpoint_path,
                len(info.replicas),
                random.choice(loaded) if loaded else "",
                ", ".join(info.methods),
            ]
        ],
    )
    out(["Method", "ACL"], [[m, a] for m, a in sorted(info.acls.items())])
    out(
        ["Replica Address", "Status", "Failure Reason"],
        [[r.address, r.status or "", r.failure_reason] for r in info.replicas],
    )
    typer.echo(f"Ready replicas: {info.ready_replicas}/{info.num_replicas} requested")
    if info.reason:
        typer.echo(f"Reason: {info.reason}")


@app.command("publish")
def publish(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    model_path: Annotated[
        str, typer.Argument(help="registered servable, e.g. sax.models.test.Echo")
    ],
    checkpoint_path: Annotated[
        str, typer.Argument(help="checkpoint dir or gs:// URL; None = random")
    ],
    num_replicas: Annotated[int, typer.Argument(help="number of replicas")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=val overrides; val is JSON when it parses, else a string"),
    ] = None,
) -> None:
    """Publish a model."""
    from sax import client

    s = settings(ctx)
    model = model_id_arg(model_id)
    values = parse_overrides(overrides or [])
    with failing("Failed to publish model"):
        client.publish(
            model,
            model_path,
            checkpoint_path,
            num_replicas,
            values,
            sax_root=s.root(),
            timeout=s.timeout_s,
        )


@app.command("unpublish")
def unpublish(
    ctx: typer.Context, model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")]
) -> None:
    """Unpublish a model."""
    from sax import client

    s = settings(ctx)
    model = model_id_arg(model_id)
    with failing("Failed to unpublish model"):
        client.unpublish(model, sax_root=s.root(), timeout=s.timeout_s)


@app.command("update")
def update(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
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

    s = settings(ctx)
    model = model_id_arg(model_id)
    values = parse_overrides(overrides or [])
    if replicas is None and checkpoint is None and not values:
        usage("Nothing to update: give --replicas, --checkpoint or key=val overrides")
    if replicas is not None and replicas < 0:
        fail("Num replicas must be non-negative.")
    with failing("Failed to update model"):
        merged = None
        if values:
            current = client.list(model, sax_root=s.root(), timeout=s.timeout_s)
            merged = {**current.overrides, **values}
        client.update(
            model,
            num_replicas=replicas,
            checkpoint_path=checkpoint,
            overrides=merged,
            sax_root=s.root(),
            timeout=s.timeout_s,
        )


@app.command("update_checkpoint")
def update_checkpoint(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    checkpoint_path: Annotated[str, typer.Argument(help="new checkpoint path")],
) -> None:
    """Update a model's checkpoint path."""
    from sax import client

    s = settings(ctx)
    model = model_id_arg(model_id)
    with failing("Failed to update model"):
        client.update(
            model, checkpoint_path=checkpoint_path, sax_root=s.root(), timeout=s.timeout_s
        )


@app.command("stats")
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

    s = settings(ctx)
    if target is None:
        target = s.default_cell()
    with failing("Failed to get stats"):
        result = client.stats(target, sax_root=s.root(), timeout=s.timeout_s)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    echo_table(
        ["Chip", "Topology", "# of Servers"],
        [[t.chip, t.topology, t.num_servers] for t in result.server_types],
    )
    echo_table(
        ["Model Path", "# of Servers"],
        [[p, n] for p, n in sorted(result.servers_by_model_path.items())],
    )


@app.command("servers")
def servers(
    ctx: typer.Context,
    cell: Annotated[str | None, typer.Argument(help="/sax/<cell>; default: --sax_cell")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the model servers joined to a cell."""
    from sax import client

    s = settings(ctx)
    cell = cell or s.default_cell()
    with failing("Failed to list servers"):
        found = client.servers(cell, sax_root=s.root(), timeout=s.timeout_s)
    if as_json:
        print_json({"servers": [x.model_dump(mode="json") for x in found]})
        return
    echo_table(
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


@app.command("watch")
def watch(
    ctx: typer.Context, model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")]
) -> None:
    """Watch addresses of a model (until Ctrl-C or the model is unpublished)."""
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


@app.command("wait")
def wait(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
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


# ---------------------------------------------------------------- access


def cell_arg(text: str) -> Any:
    from sax.naming import CellId

    try:
        return CellId.parse(text)
    except SaxError as exc:
        usage(f"Invalid cell {text}, should be /sax/<cell>: {exc.message}")


@app.command("getacl")
def getacl(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="/sax/<cell> or /sax/<cell>/<model>")],
    method: Annotated[str, typer.Argument(help="a method, or all (models only)")] = "",
) -> None:
    """Get ACLs for a cell or model."""
    import sax.client as client

    s = settings(ctx)
    with failing("Failed to get ACL"):
        acl = client.get_acl(target, method, sax_root=s.root(), timeout=s.timeout_s)
    what = "cell" if target.count("/") == 2 else "model"
    if isinstance(acl, dict):
        if not acl:
            typer.echo("No ACLs set for model.")
        for name, value in sorted(acl.items()):
            typer.echo(f"{name}: {value}")
    elif acl:
        typer.echo(acl)
    else:
        typer.echo("No ACLs set for method." if method else f"No admin ACLs set for {what}.")


@app.command("setacl")
def setacl(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="<cell> <acl> | <model> [<method>] <acl>")],
) -> None:
    """Set ACLs for a cell or model (an empty method ACL removes it)."""
    import sax.client as client

    if len(args) not in (2, 3):
        usage("Provide a cell or model ID, optionally a model method, and an ACL.")
    target, acl = args[0], args[-1]
    method = args[1] if len(args) == 3 else ""
    s = settings(ctx)
    with failing("Failed to set ACL"):
        client.set_acl(target, acl, method, sax_root=s.root(), timeout=s.timeout_s)


def edit_cell_config(ctx: typer.Context, cell: str, what: str, edit: Callable[[Any], Any]) -> None:
    """Applies `edit` (CellConfig -> CellConfig) to the cell's config.json with a
    compare-and-swap; a failure is ``Error: <what>: ...``, exit 1."""
    from sax.auth.principals import edit_config
    from sax.store import CellStore

    with failing(what):
        edit_config(CellStore(settings(ctx).root(), cell_arg(cell)), edit)


@app.command("addtoken")
def addtoken(
    ctx: typer.Context,
    cell: Annotated[str, typer.Argument(help="/sax/<cell>")],
    principal: Annotated[str, typer.Argument(help="who the token identifies")],
    groups: Annotated[
        str | None, typer.Option("--groups", help="comma-separated groups (replace the old)")
    ] = None,
) -> None:
    """Make a token for a principal (auth turns on with the first); prints it once."""
    from sax.auth.principals import add_token

    tokens: list[str] = []
    was_off: list[bool] = []

    def edit(config: Any) -> Any:
        updated, token = add_token(config, principal, groups.split(",") if groups else None)
        tokens[:], was_off[:] = [token], [not config.principals]
        return updated

    edit_cell_config(ctx, cell, "Failed to add a token", edit)
    if was_off[0]:
        typer.echo(
            f"Auth is now on for {cell}: model servers need tokens of their own to join "
            "(saxutil addtoken, then SAX_TOKEN for sax model-server).",
            err=True,
        )
    typer.echo(tokens[0])


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    cell: Annotated[str, typer.Argument(help="/sax/<cell>")],
    principal: Annotated[str, typer.Argument(help="whose tokens stop working")],
) -> None:
    """Revoke every token of a principal; servers stop accepting them within seconds."""
    from sax.auth import principals

    edit_cell_config(
        ctx, cell, "Failed to revoke", lambda config: principals.revoke(config, principal)
    )


@app.command("setgroups")
def setgroups(
    ctx: typer.Context,
    cell: Annotated[str, typer.Argument(help="/sax/<cell>")],
    principal: Annotated[str, typer.Argument(help="a principal")],
    groups: Annotated[str, typer.Argument(help="comma-separated groups; empty = none")],
) -> None:
    """Set the groups (ACL names) a principal belongs to."""
    from sax.auth import principals

    edit_cell_config(
        ctx,
        cell,
        "Failed to set groups",
        lambda config: principals.set_groups(config, principal, groups.split(",")),
    )


@app.command("principals")
def list_principals(
    ctx: typer.Context, cell: Annotated[str, typer.Argument(help="/sax/<cell>")]
) -> None:
    """List a cell's principals, their groups and how many tokens each holds."""
    from sax.store import CellStore

    with failing("Failed to read the cell config"):
        config = CellStore(settings(ctx).root(), cell_arg(cell)).read_config()
    if not config.principals:
        typer.echo("Auth is off: the cell has no principals.")
        return
    echo_table(
        ["Principal", "Groups", "Tokens"],
        [
            [name, ",".join(p.groups) or "-", len(p.token_sha256)]
            for name, p in sorted(config.principals.items())
        ],
    )


# ---------------------------------------------------------------- data commands

ExtraOpt = Annotated[str, typer.Option("--extra", help='extra inputs, e.g. "temperature:0.5,k:v"')]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the response JSON")]


@app.command("lm.generate")
def lm_generate(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    query: Annotated[str, typer.Argument(help="the prompt, or - to read stdin")],
    stream: Annotated[bool, typer.Option("--stream", help="stream responses")] = False,
    extra: ExtraOpt = "",
    n: Annotated[
        int, typer.Option("-n", help="maximum number of generated texts to output or zero for all")
    ] = 0,
    terse: Annotated[
        bool,
        typer.Option(
            "--terse", help="print generated texts one line per result, descending by score"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a text against a given model."""
    extra_inputs = extra_option(extra)
    text = read_input(query).decode() if query == "-" else query
    model = open_model(ctx, model_id)
    if stream:
        if terse:
            fail("Terse output incompatible with streaming (-stream).")
        if n > 0:
            fail("Max outputs (-n) incompatible with streaming (-stream).")
        stream_generate(model, text, extra_inputs, as_json)
        return
    with failing("Failed to generate query"):
        samples = model.lm.generate_samples(text, extra_inputs)
    if as_json:
        print_json({"samples": [x.model_dump(mode="json") for x in samples]})
        return
    if terse:
        ranked = sorted(samples, key=lambda x: x.score, reverse=True)
        for sample in ranked[: n or None]:
            typer.echo(sample.text)
        return
    rows = [[x.text, render.format_float(x.score)] for x in samples]
    echo_table(["generate", "Score"], rows[: n or None])


def stream_generate(model: Any, text: str, extra: dict[str, Any], as_json: bool) -> None:
    """Prints sample 0 as it grows (appending deltas; a rewrite starts a new line), the other
    samples at the end, then the final scores."""
    out = sys.stdout
    shown = ""
    with failing("Command failed"):
        stream = model.lm.generate_stream(text, extra)
        for chunk in stream:
            if as_json:
                out.write(chunk.model_dump_json() + "\n")
            elif stream.texts:
                current = stream.texts[0]
                out.write(current[len(shown) :] if current.startswith(shown) else "\n" + current)
                shown = current
            out.flush()
    samples = stream.samples or []
    if as_json:
        out.write(json.dumps({"samples": [x.model_dump(mode="json") for x in samples]}) + "\n")
        return
    out.write("\n")
    for i, sample in enumerate(samples[1:], start=1):
        out.write(f"[{i}] {sample.text}\n")
    out.write("Scores: " + ", ".join(render.format_float(x.score) for x in samples) + "\n")


@app.command("lm.score")
def lm_score(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    prefix: Annotated[str, typer.Argument(help="the prefix")],
    suffixes: Annotated[list[str], typer.Argument(help="one or more suffixes")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Score a prefix and suffix against a given model."""
    extra_inputs = extra_option(extra)
    model = open_model(ctx, model_id)
    with failing("Failed to score prefix/suffix"):
        scores = model.lm.score(prefix, suffixes, extra_inputs)
    if as_json:
        print_json({"scores": scores})
        return
    echo_table(
        ["Suffix", "Score"],
        [[s, render.format_float(v)] for s, v in zip(suffixes, scores, strict=False)],
    )


@app.command("lm.embed")
def lm_embed(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    text: Annotated[str, typer.Argument(help="the text, or - to read stdin")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Embed a text against a given model."""
    extra_inputs = extra_option(extra)
    body = read_input(text).decode() if text == "-" else text
    model = open_model(ctx, model_id)
    with failing(f"Failed to embed text ({body})"):
        embedding = model.lm.embed(body, extra_inputs)
    if as_json:
        print_json({"embedding": embedding})
        return
    echo_table(["Text", "Embedding"], [[body, render.floats(embedding)]])


@app.command("lm.gradient")
def lm_gradient(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    prefix: Annotated[str, typer.Argument(help="the prefix")],
    suffix: Annotated[str, typer.Argument(help="the suffix")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Generate gradient of a pair of prefix and suffix against a given model."""
    extra_inputs = extra_option(extra)
    model = open_model(ctx, model_id)
    with failing("Failed to get the gradient of prefix/suffix"):
        result = model.lm.gradient(prefix, suffix, extra_inputs)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    names = sorted(result.gradients)
    echo_table(
        ["Score", *names],
        [
            [
                render.floats(result.score),
                *(render.floats(result.gradients[k].values, 8) for k in names),
            ]
        ],
    )


@app.command("vm.classify")
def vm_classify(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    image: Annotated[str, typer.Argument(help="image file, or - to read stdin")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Classify an image against a given model."""
    extra_inputs = extra_option(extra)
    data = read_input(image)
    model = open_model(ctx, model_id)
    with failing(f"Failed to classify image ({image})"):
        results = model.vm.classify(data, extra_inputs)
    if as_json:
        print_json({"texts": [{"text": t, "score": v} for t, v in results]})
        return
    echo_table(["Text", "Score"], [[t, render.format_float(v)] for t, v in results])


@app.command("vm.embed")
def vm_embed(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    image: Annotated[str, typer.Argument(help="image file, or - to read stdin")],
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Embed an image (as byte array) against a given model."""
    extra_inputs = extra_option(extra)
    data = read_input(image)
    model = open_model(ctx, model_id)
    with failing(f"Failed to embed image ({image})"):
        embedding = model.vm.embed(data, extra_inputs)
    if as_json:
        print_json({"embedding": embedding})
        return
    name = "stdin" if image == "-" else image
    echo_table(["Image", "Embedding"], [[name, render.floats(embedding)]])


@app.command("vm.detect")
def vm_detect(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    image: Annotated[str, typer.Argument(help="image file, or - to read stdin")],
    text: Annotated[
        list[str] | None,
        typer.Option("--text", help="an open-set concept (repeatable; models that take text)"),
    ] = None,
    extra: ExtraOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Detect objects in an image: boxes (centre, size in pixels), labels and scores."""
    extra_inputs = extra_option(extra)
    data = read_input(image)
    model = open_model(ctx, model_id)
    with failing(f"Failed to detect objects in image ({image})"):
        boxes = model.vm.detect(data, text or [], extra_inputs)
    if as_json:
        print_json({"bounding_boxes": [b.model_dump() for b in boxes]})
        return
    echo_table(
        ["Text", "Score", "Cx", "Cy", "W", "H"],
        [
            [b.text, *(render.format_float(v) for v in (b.score, b.cx, b.cy, b.w, b.h))]
            for b in boxes
        ],
    )


@app.command("vm.generate")
def vm_generate(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="/sax/<cell>/<model>")],
    text: Annotated[str, typer.Argument(help="the prompt")],
    output: Annotated[
        str | None,
        typer.Argument(help="output directory, or - for raw bytes on stdout (or use --out)"),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="output directory")] = None,
    extra: ExtraOpt = "",
) -> None:
    """Generate list of images and scores for the input text; writes 0001.PNG, ... to a dir."""
    if (output is None) == (out is None):
        usage("vm.generate takes an output directory: as the third argument or --out DIR")
    target = str(out if out is not None else output)
    extra_inputs = extra_option(extra)
    model = open_model(ctx, model_id)
    with failing(f"Failed to generate images for ({text})"):
        images = model.vm.generate(text, extra_inputs)
    if target == "-":
        for data, _ in images:
            sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    paths = [Path(target) / f"{i:04d}.PNG" for i in range(1, len(images) + 1)]
    try:
        Path(target).mkdir(mode=0o750, parents=True, exist_ok=True)
        for path, (data, _) in zip(paths, images, strict=True):
            path.write_bytes(data)
            path.chmod(0o640)
    except OSError as exc:
        fail(f"Failed to save generated images for ({text}) to ({target}) due to [{exc}].")
    echo_table(
        ["Image", "Score"],
        [[str(p), render.format_float(v)] for p, (_, v) in zip(paths, images, strict=True)],
    )


# ---------------------------------------------------------------- argv normalisation

GLOBAL_FLAGS = (
    "--sax_root",
    "--sax-root",
    "--sax_timeout",
    "--sax-timeout",
    "--sax_cell",
    "--sax-cell",
    "--token",
)
# Go's flag package takes -name and --name alike; click would read -stream as -s -t -r ...
GO_LONG_FLAGS = frozenset(
    {
        "sax_root",
        "sax-root",
        "sax_timeout",
        "sax-timeout",
        "sax_cell",
        "sax-cell",
        "token",
        "groups",
        "stream",
        "extra",
        "terse",
        "json",
        "csv",
        "replicas",
        "timeout",
        "checkpoint",
        "checkpoint_path",
        "checkpoint-path",
        "out",
        "text",
        "help",
    }
)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Accepts Go-style ``-flag`` spellings and global flags placed after the command."""
    args: list[str] = []
    for arg in argv:
        match = re.fullmatch(r"-([a-z][a-z_-]+)(=.*)?", arg, re.DOTALL)
        if match and match.group(1) in GO_LONG_FLAGS:
            arg = "-" + arg
        elif arg.startswith("-n="):  # Go's -n=3; click would read the value as "=3"
            args.append("-n")
            arg = arg[3:]
        args.append(arg)
    head: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_FLAGS:
            head.append(arg)
            if "=" not in arg and i + 1 < len(args):
                head.append(args[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return head + rest


def skip_httpx_cli() -> None:
    """Keeps httpx's own command line out of the process: its package ``__init__`` imports it
    (rich, pygments and click, about a third of saxutil's start-up) whenever those are
    installed, and falls back to a stub when ``httpx._main`` has no ``main``. saxutil never
    runs httpx's CLI, and it starts once per command, so each command pays less."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))


def main(argv: Sequence[str] | None = None) -> None:
    skip_httpx_cli()
    args = normalize_argv(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="saxutil")


if __name__ == "__main__":
    main()
