"""``sax``: launchers for the processes of a cell.

    sax admin-config --sax_cell=/sax/test --sax_root=DIR_OR_URL --fs_root=DIR_OR_URL
    sax admin-server --sax_cell=/sax/test --sax_root=... --port=10000
    sax model-server --sax_cell=/sax/test --sax_root=... --port=10001 --platform_chip=cpu
    sax up           # a whole local cell on this machine

Flags accept the seed's underscore spelling and dashes; ``--sax_root`` falls back to ``SAX_ROOT``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn

import typer

from sax.errors import SaxError
from sax.naming import CellId

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Launchers for the processes of a sax cell: admin-config, admin-server, model-server, up.",
)

SaxCell = Annotated[str, typer.Option("--sax_cell", "--sax-cell", help="/sax/<cell>")]
SaxRoot = Annotated[
    str,
    typer.Option("--sax_root", "--sax-root", envvar="SAX_ROOT", help="sax root: dir or gs:// URL"),
]
Port = Annotated[int, typer.Option("--port")]
Host = Annotated[str, typer.Option("--host", help="interface to listen on")]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure", help="serve a non-loopback address although the cell has no principals"
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
    )
    for chatty in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a server's main coroutine on uvloop when it is installed (faster data path)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _exit_now(code: int) -> NoReturn:
    """Exits without interpreter finalisation, once `serve` has stopped everything itself
    (engines unloaded, child processes gone, sockets closed). Finalising a process that holds
    torch, vLLM and their native extensions only frees memory the kernel frees anyway, and on a
    busy machine it took minutes, during which the stopped server still looked alive."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _cell(text: str) -> str:
    try:
        return str(CellId.parse(text))
    except SaxError as exc:
        raise typer.BadParameter(exc.message) from exc


def _server_process(
    verbose: bool, sax_cell: str, sax_root: str, port: int, host: str, insecure: bool
) -> dict[str, Any]:
    """Sets up a server process's logging and returns the options both server processes take
    alike: their cell and where they listen."""
    _setup_logging(verbose)
    return {
        "sax_root": sax_root,
        "cell": _cell(sax_cell),
        "port": port,
        "host": host,
        "insecure": insecure,
    }


@app.command("admin-config")
def admin_config(
    sax_cell: SaxCell,
    sax_root: SaxRoot,
    fs_root: Annotated[str, typer.Option("--fs_root", "--fs-root", help="where state.json lives")],
    admin_acl: Annotated[str, typer.Option("--admin_acl", "--admin-acl")] = "",
) -> None:
    """Create (or rewrite) a cell's config.json. Run once per cell."""
    _setup_logging()
    from sax.schemas import CellConfig
    from sax.store import CellStore

    store = CellStore(sax_root, CellId.parse(_cell(sax_cell)))
    store.create(CellConfig(fs_root=fs_root, admin_acl=admin_acl), exist_ok=True)
    typer.echo(f"Configured {sax_cell}: sax_root={sax_root} fs_root={fs_root}")


@app.command("admin-server")
def admin_server(
    sax_cell: SaxCell,
    sax_root: SaxRoot,
    port: Port = 10000,
    host: Host = "127.0.0.1",
    lease_ttl: Annotated[float, typer.Option("--lease_ttl", "--lease-ttl")] = 10.0,
    server_ttl: Annotated[float, typer.Option("--server_ttl", "--server-ttl")] = 10.0,
    insecure: Insecure = False,
    verbose: Verbose = False,
) -> None:
    """Serve a cell's admin API; waits as standby while another admin holds the lease."""
    listen = _server_process(verbose, sax_cell, sax_root, port, host, insecure)
    from sax.admin.main import serve
    from sax.admin.options import AdminOptions

    opts = AdminOptions(
        **listen,
        lease_ttl_s=lease_ttl,
        lease_renew_s=max(0.2, lease_ttl / 3),
        server_ttl_s=server_ttl,
    )
    _run(serve(opts))


@app.command("model-server")
def model_server(
    sax_cell: SaxCell,
    sax_root: SaxRoot,
    port: Port = 10001,
    host: Host = "127.0.0.1",
    platform_chip: Annotated[str, typer.Option("--platform_chip", "--platform-chip")] = "cpu",
    platform_topology: Annotated[
        str, typer.Option("--platform_topology", "--platform-topology")
    ] = "1",
    tags: Annotated[str, typer.Option("--tags", help="comma-separated tags")] = "",
    memory: Annotated[
        str, typer.Option("--memory", help="memory for models, e.g. 16GiB; 0 = no limit")
    ] = "0",
    backends: Annotated[
        str, typer.Option("--backends", help="e.g. test,vllm,jax; empty = all installed")
    ] = "",
    data_address: Annotated[str, typer.Option("--data_address", "--data-address")] = "",
    max_concurrent_loads: Annotated[
        int, typer.Option("--max_concurrent_loads", "--max-concurrent-loads")
    ] = 2,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain_timeout",
            "--drain-timeout",
            help="on SIGTERM, seconds requests in flight may take to finish",
        ),
    ] = 30.0,
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="SAX_TOKEN", help="this server's credential for joining the cell"
        ),
    ] = "",
    insecure: Insecure = False,
    verbose: Verbose = False,
) -> None:
    """Serve models: join the cell's admin and load what it assigns."""
    listen = _server_process(verbose, sax_cell, sax_root, port, host, insecure)
    from sax.server.main import serve
    from sax.server.options import ServerOptions, parse_byte_size

    opts = ServerOptions(
        **listen,
        data_address=data_address,
        chip=platform_chip,
        topology=platform_topology,
        tags=tuple(t for t in tags.split(",") if t),
        memory_bytes=parse_byte_size(memory),
        backends=tuple(b for b in backends.split(",") if b),
        max_concurrent_loads=max_concurrent_loads,
        drain_timeout_s=drain_timeout,
        token=token,
    )
    _run(serve(opts))
    _exit_now(0)


@app.command("up")
def up(
    sax_root: Annotated[
        str, typer.Option("--sax_root", "--sax-root", envvar="SAX_ROOT")
    ] = ".sax/root",
    fs_root: Annotated[str, typer.Option("--fs_root", "--fs-root")] = ".sax/fs",
    sax_cell: Annotated[str, typer.Option("--sax_cell", "--sax-cell")] = "/sax/test",
    admin_port: Annotated[int, typer.Option("--admin_port", "--admin-port")] = 10000,
    server_port: Annotated[int, typer.Option("--server_port", "--server-port")] = 10001,
    demo: Annotated[
        bool, typer.Option("--demo", help="publish SmolLM2 + MiniLM and query them")
    ] = False,
) -> None:
    """Start a local cell (admin + one model server) on this machine; Ctrl-C stops it."""
    _setup_logging()
    from sax.cli.local_cell import run_local_cell

    raise typer.Exit(
        run_local_cell(
            sax_root=os.path.abspath(sax_root) if "://" not in sax_root else sax_root,
            fs_root=os.path.abspath(fs_root) if "://" not in fs_root else fs_root,
            cell=_cell(sax_cell),
            admin_port=admin_port,
            server_port=server_port,
            demo=demo,
        )
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
