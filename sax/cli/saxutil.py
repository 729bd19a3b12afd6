"""``saxutil``: Saxml's command-line tool, seed syntax verbatim.

    saxutil [--sax_root=DIR|gs://...] [--sax_timeout=60s] <command> [flags] <args>

Results go to stdout; errors go to stderr as ``Error: <what failed>: <CODE>: <message>``.
Exit codes: 0 success, 1 failure, 2 usage error (wrong argument count, bad flag, unknown command).
Flags take underscores or dashes (``--sax_root``, ``--sax-root``), Go's single dash
(``-stream``, ``-extra=...``), and the global flags may also come after the command. Saxml's
quirks are fixed on purpose: ``lm.score`` prints one score per suffix, ``update`` without
``--replicas`` changes only what is given, tables list gradients in name order.

The commands live beside this module: `admin_commands` (cells and models), `access_commands`
(ACLs, principals, tokens), `data_commands` (lm.*, vm.*); `args` parses, `render` prints. A
command's module is imported, and its click command built, only when that command runs or help
lists it, so each run pays for one command's imports. ``ls``, ``publish``, ``unpublish`` and
``lm.generate`` make their one request through `sax.client.direct` (no event loop, no pydantic
unless ``--json`` asks for the schema's dump).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sax.cli.args import DEFAULT_TIMEOUT, Settings, normalize_argv, parse_duration
from sax.cli.render import usage

HELP = "Saxml command-line tool: manage a cell's models and query them."

# Each command's module under sax.cli, in the order help lists them.
HOMES: dict[str, str] = {
    **dict.fromkeys(
        (
            "create",
            "ls",
            "publish",
            "unpublish",
            "update",
            "update_checkpoint",
            "stats",
            "servers",
            "watch",
            "wait",
        ),
        "admin_commands",
    ),
    **dict.fromkeys(
        ("getacl", "setacl", "addtoken", "revoke", "setgroups", "principals"), "access_commands"
    ),
    **dict.fromkeys(
        (
            "lm.generate",
            "lm.score",
            "lm.embed",
            "lm.gradient",
            "vm.classify",
            "vm.embed",
            "vm.detect",
            "vm.generate",
        ),
        "data_commands",
    ),
}


class LazyCommands(MutableMapping[str, Any]):
    """The root group's commands by name: those in `HOMES` are built from their module's
    `commands` (a `typer.Typer`) on first lookup, with the root app's settings."""

    def __init__(self, built: dict[str, Any]) -> None:
        self._built = built

    def __getitem__(self, name: str) -> Any:
        if name not in self._built and name in HOMES:
            module = importlib.import_module(f"sax.cli.{HOMES[name]}")
            for info in module.commands.registered_commands:
                if info.name == name:
                    self._built[name] = typer.main.get_command_from_info(
                        info,
                        pretty_exceptions_short=app.pretty_exceptions_short,
                        rich_markup_mode=app.rich_markup_mode,
                    )
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from (name for name in self._built if name not in HOMES)
        yield from HOMES

    def __len__(self) -> int:
        return len(self._built.keys() | HOMES.keys())

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]


class RootGroup(TyperGroup):
    """saxutil's group: the commands Typer built (help) and `LazyCommands` for the rest."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(dict(self.commands))


app = typer.Typer(
    cls=RootGroup,
    add_completion=False,
    no_args_is_help=True,
    help=HELP,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def skip_httpx_cli() -> None:
    """Keeps httpx's own command line out of the process: its package ``__init__`` imports it
    (rich, pygments and click, about a third of saxutil's start-up) whenever those are
    installed, and falls back to a stub when ``httpx._main`` has no ``main``. saxutil never
    runs httpx's CLI, and it starts once per command, so each command pays less."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))


def skip_pydantic_plugins() -> None:
    """Turns off pydantic's plugin discovery unless the user set ``PYDANTIC_DISABLE_PLUGINS``:
    the first model pydantic builds scans every installed package's entry points for plugins
    (validation observers), 20-50 ms in an environment with an inference stack installed, paid
    once per command. saxutil validates a few admin or replica replies and has nothing for
    such a plugin to observe."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def main(argv: Sequence[str] | None = None) -> None:
    skip_httpx_cli()
    skip_pydantic_plugins()
    args = normalize_argv(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="saxutil")


if __name__ == "__main__":
    main()
