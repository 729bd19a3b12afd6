"""What saxutil prints: results on stdout, errors on stderr with their exit codes.

Tables are the way Saxml's saxutil prints them (olekukonko/tablewriter v0.0.4 defaults), since
scripts and eyes trained on Saxml read these: ``+---+`` borders, headers upper-cased with ``_``
and non-numeric ``.`` turned into spaces and centred, numeric-looking cells right-aligned, text
wrapped at 30 columns on spaces (a longer single word widens its column), and floats as Go's
``FormatFloat(x, 'G', 8, 64)``. ``--csv`` is Saxml's layout, ``--json`` one indented document.
Errors are ``Error: <what failed>: <CODE>: <message>``; exit 1 for a failure, 2 for a usage
error.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

import typer

from sax.errors import SaxError

MAX_WIDTH = 30
_NUMERIC = re.compile(r"^-*\d*\.?\d*$")


def format_float(x: float) -> str:
    """Go's ``strconv.FormatFloat(x, 'G', 8, 64)``: 8 significant digits, no trailing zeros
    (but 0 for -0.0: a log-probability of exactly zero is not negative)."""
    return format(x + 0.0, ".8G")


def floats(values: Iterable[float], limit: int | None = None) -> str:
    """Saxml's arrayToString / arrayToStringWithLimit: ``", "``-joined, ``", ..."`` if cut."""
    items = list(values)
    text = ", ".join(format_float(v) for v in items[:limit])
    return text + ", ..." if limit is not None and len(items) > limit else text


def title(name: str) -> str:
    """tablewriter's header formatting: ``_`` -> space, ``.`` next to a non-digit -> space."""
    chars = list(name)
    for i, ch in enumerate(chars):
        if ch == "_":
            chars[i] = " "
        elif ch == ".":
            before = i > 0 and not _num_or_space(chars[i - 1])
            after = i < len(chars) - 1 and not _num_or_space(chars[i + 1])
            if before or after:
                chars[i] = " "
    text = "".join(chars).strip()
    return (text or (" " if name else "")).upper()


def _num_or_space(ch: str) -> bool:
    return ch.isdigit() or ch == " "


def width(text: str) -> int:
    """Display columns: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str) -> list[str]:
    """Greedy word wrap at MAX_WIDTH (or the longest word); newlines are kept as breaks."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        limit = max([MAX_WIDTH, *(width(w) for w in words)])
        current = ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if current and width(candidate) > limit:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def _pad(text: str, size: int, align: str) -> str:
    gap = size - width(text)
    if gap <= 0:
        return text
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The whole table as text, ending with a newline."""
    head = [title(h) for h in headers]
    body = [[str(c) for c in row] for row in rows]
    cells = [[_wrap(c) for c in row] for row in body]
    widths = [width(h) for h in head]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(width(line) for line in lines))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [
        border,
        "| " + " | ".join(_pad(h, w, "center") for h, w in zip(head, widths, strict=True)) + " |",
    ]
    out.append(border)
    for raw, row in zip(body, cells, strict=True):
        aligns = ["right" if _NUMERIC.match(c) else "left" for c in raw]
        for k in range(max((len(lines) for lines in row), default=1)):
            parts = [
                _pad(lines[k] if k < len(lines) else "", w, a)
                for lines, w, a in zip(row, widths, aligns, strict=False)
            ]
            out.append("| " + " | ".join(parts) + " |")
    out.append(border)
    return "\n".join(out) + "\n"


def csv_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Saxml's ``--csv`` layout (``# `` + header keys), but properly quoted."""
    import csv
    import io

    out = io.StringIO()
    out.write("# ")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[str(c) for c in row] for row in rows])
    return out.getvalue()


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    typer.echo(table(headers, rows), nl=False)


def echo_csv(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    typer.echo(csv_table(headers, rows), nl=False)


def echo_json(value: Any) -> None:
    import json

    typer.echo(json.dumps(value, indent=2))


def echo_result(
    as_json: bool, value: Any, headers: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """`value` as JSON with ``--json``, else the table of `headers` and `rows`."""
    if as_json:
        echo_json(value)
    else:
        echo_table(headers, rows)


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
