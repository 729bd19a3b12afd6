"""saxutil's access commands: ACLs (getacl, setacl) and the principals and tokens of a cell
with auth on (addtoken, revoke, setgroups, principals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sax.cli.args import CellArg, admin_call, cell_arg, settings
from sax.cli.render import echo_table, failing, usage

commands = typer.Typer()


@commands.command("getacl")
def getacl(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="/sax/<cell> or /sax/<cell>/<model>")],
    method: Annotated[str, typer.Argument(help="a method, or all (models only)")] = "",
) -> None:
    """Get ACLs for a cell or model."""
    from sax import client

    acl = admin_call(ctx, "Failed to get ACL", client.get_acl, target, method)
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


@commands.command("setacl")
def setacl(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="<cell> <acl> | <model> [<method>] <acl>")],
) -> None:
    """Set ACLs for a cell or model (an empty method ACL removes it)."""
    from sax import client

    if len(args) not in (2, 3):
        usage("Provide a cell or model ID, optionally a model method, and an ACL.")
    target, acl = args[0], args[-1]
    method = args[1] if len(args) == 3 else ""
    admin_call(ctx, "Failed to set ACL", client.set_acl, target, acl, method)


def edit_cell_config(ctx: typer.Context, cell: str, what: str, edit: Callable[[Any], Any]) -> None:
    """Applies `edit` (CellConfig -> CellConfig) to the cell's config.json with a
    compare-and-swap; a failure is ``Error: <what>: ...``, exit 1."""
    from sax.auth.principals import edit_config
    from sax.store import CellStore

    with failing(what):
        edit_config(CellStore(settings(ctx).root(), cell_arg(cell)), edit)


@commands.command("addtoken")
def addtoken(
    ctx: typer.Context,
    cell: CellArg,
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


@commands.command("revoke")
def revoke(
    ctx: typer.Context,
    cell: CellArg,
    principal: Annotated[str, typer.Argument(help="whose tokens stop working")],
) -> None:
    """Revoke every token of a principal; servers stop accepting them within seconds."""
    from sax.auth import principals

    edit_cell_config(
        ctx, cell, "Failed to revoke", lambda config: principals.revoke(config, principal)
    )


@commands.command("setgroups")
def setgroups(
    ctx: typer.Context,
    cell: CellArg,
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


@commands.command("principals")
def list_principals(ctx: typer.Context, cell: CellArg) -> None:
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
