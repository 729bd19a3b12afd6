"""saxutil's arguments: the global settings, the shared argument and option types, the parsers
for Saxml's value syntaxes (durations, ``-extra``, ``key=val`` overrides), and the argv
rewrite that accepts Go's flag spellings."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sax.cli.render import fail, failing, usage
from sax.errors import Code, SaxError

if TYPE_CHECKING:
    from sax.naming import CellId

DEFAULT_TIMEOUT = "60s"

ModelIdArg = Annotated[str, typer.Argument(help="/sax/<cell>/<model>")]
CellArg = Annotated[str, typer.Argument(help="/sax/<cell>")]
ImageArg = Annotated[str, typer.Argument(help="image file, or - to read stdin")]
ExtraOpt = Annotated[str, typer.Option("--extra", help='extra inputs, e.g. "temperature:0.5,k:v"')]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the response JSON")]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="key=val overrides; val is JSON when it parses, else a string"),
]


@dataclass(frozen=True)
class Settings:
    """The global flags: ``--sax_root``, ``--sax_timeout`` (seconds) and ``--sax_cell``."""

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


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


T = TypeVar("T")


def admin_call(ctx: typer.Context, what: str, call: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``call(*args, **kw)`` on the cell's admin with ``--sax_root`` and ``--sax_timeout``; a
    `SaxError` exits 1 as ``Error: <what>: <CODE>: <message>``."""
    s = settings(ctx)
    with failing(what):
        return call(*args, sax_root=s.root(), timeout=s.timeout_s, **kw)


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


def extra_arg(extra: str) -> dict[str, float | int | str]:
    """`parse_extra` for ``--extra``; a bad one exits 1 with ``Could not parse extra inputs``."""
    try:
        return parse_extra(extra)
    except SaxError as exc:
        typer.echo(f"Could not parse extra inputs: {exc}", err=True)
        raise typer.Exit(1) from exc


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``key=val`` pairs; a value that parses as JSON is that JSON, else the raw string. A pair
    without ``=`` is a usage error."""
    import json

    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            usage("Overrides should be of the form key=val")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def model_id_arg(text: str) -> str:
    """The canonical ``/sax/<cell>/<model>``; an invalid one exits 1."""
    from sax.naming import ModelId

    try:
        return str(ModelId.parse(text))
    except SaxError as exc:
        fail(f"Invalid model ID {text}, should be /sax/<cell>/<model>: {exc}")


def cell_arg(text: str) -> CellId:
    """The cell of ``/sax/<cell>``; an invalid one is a usage error."""
    from sax.naming import CellId

    try:
        return CellId.parse(text)
    except SaxError as exc:
        usage(f"Invalid cell {text}, should be /sax/<cell>: {exc.message}")


def read_input(path: str) -> bytes:
    """The bytes of file `path`, or of stdin for ``-``; an unreadable file exits 1."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        fail(f"Failed to read file ({path}) due to {exc}")


def text_arg(text: str) -> str:
    """`text` itself, or stdin (decoded) for ``-``."""
    return read_input(text).decode() if text == "-" else text


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
