"""Writes the OpenAPI specs in ``openapi/`` from the app factories, or checks them for drift.

    python -m sax.openapi_gen          # regenerate openapi/admin.json and openapi/model.json
    python -m sax.openapi_gen --check  # exit 1 if a committed spec differs from the apps

The specs are build outputs committed for API consumers (generated clients, reviewers); the
test suite runs the check so a route or schema change cannot ship without its spec.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPENAPI_DIR = Path(__file__).resolve().parent.parent / "openapi"


def admin_spec() -> dict[str, Any]:
    from sax.admin.cell import Cell
    from sax.admin_app import create_app
    from sax.naming import CellId
    from sax.schemas import CellState

    async def persist(_: CellState) -> None:
        return None

    return create_app(Cell(CellId("test"), "openapi", persist)).openapi()


def model_spec() -> dict[str, Any]:
    from sax.model_app import create_app
    from sax.server.manager import ModelServer
    from sax.server.options import ServerOptions

    server = ModelServer(ServerOptions(sax_root="", cell="/sax/test", data_address="localhost:0"))
    return create_app(server).openapi()


SPECS: dict[str, Callable[[], dict[str, Any]]] = {
    "admin.json": admin_spec,
    "model.json": model_spec,
}


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> spec text, for every app whose factory can be imported here."""
    out = {}
    for name, build in SPECS.items():
        try:
            out[name] = render(build())
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    drift = []
    for name, text in generate().items():
        path = OPENAPI_DIR / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            drift.append(name)
        else:
            OPENAPI_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drift:
        print(
            f"openapi drift in {', '.join(drift)}: run `python -m sax.openapi_gen`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
