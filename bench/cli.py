"""CLI start-up benchmark: wall time of ``saxutil ls``, ``publish`` and ``lm.generate`` on a live cell.

Run by hand (never as a test); prints ONE JSON line. Starts a local cell (``sax admin-server``
and a ``sax model-server`` with the test backend), publishes the ``Echo`` test servable, then
times each command end to end as a user runs it (process start, imports, the admin or replica
round trip, output), so the figure is the CLI's own cost, not an engine's:

- with ``hyperfine`` when it is installed (the ``dev`` extra installs it beside this
  interpreter; ``--warmup 2``, ``--runs N``): its mean and median;
- with ``subprocess`` timing in Python (same commands, N runs): median and p90;
- ``python -c pass`` on the same interpreter: the floor any Python CLI pays.

``met`` compares hyperfine's median (subprocess timing's without hyperfine) with the 0.3 s target;
``new_vs_baseline`` (and ``new_vs_baseline_hyperfine``) are the ratios of the medians.

    .venv/bin/python bench/cli.py --runs 20
    .venv/bin/python bench/cli.py --runs 20 --baseline /path/to/older/checkout
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data_plane import BIN, REPO, configure_cell, free_port, pct, process, wait_http

TARGET_S = 0.3
# The dev extra's hyperfine sits beside this interpreter, which need not be on PATH.
HYPERFINE = shutil.which("hyperfine", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def commands(root: Path, cell: str, baseline: str | None) -> dict[str, list[str]]:
    """The timed commands; with `baseline` (a source tree holding an older ``sax`` package),
    each saxutil command also as ``baseline <command>`` run from that tree."""
    flag = f"--sax_root={root}"
    args = {
        "ls": ["ls", cell],
        "publish": ["publish", f"{cell}/cli", "sax.models.test.Echo", "None", "1"],
        "lm.generate": ["lm.generate", f"{cell}/echo", "hello"],
    }
    out = {"python -c pass": [sys.executable, "-c", "pass"]}
    for name, rest in args.items():
        out[f"saxutil {name}"] = [str(BIN / "saxutil"), flag, *rest]
    if baseline:
        run = f"import sys; sys.path.insert(0, {baseline!r}); from sax.cli.saxutil import main; main()"
        for name, rest in args.items():
            out[f"baseline {name}"] = [sys.executable, "-c", run, flag, *rest]
    return out


def compile_bytecode(trees: list[Path]) -> None:
    """Writes the bytecode of each timed tree's ``sax`` package, as an installed package has
    it; otherwise, where ``PYTHONDONTWRITEBYTECODE`` is set, every run compiles each ``sax``
    module it imports from source, which no user's install does."""
    for tree in trees:
        compileall.compile_dir(str(tree / "sax"), quiet=1)


def unpublish(root: Path, cell: str) -> None:
    subprocess.run(
        [str(BIN / "saxutil"), f"--sax_root={root}", "unpublish", f"{cell}/cli"],
        capture_output=True,
    )


def time_subprocess(cmd: list[str], runs: int, reset: Any = None) -> dict[str, float | None]:
    walls = []
    for _ in range(runs):
        if reset is not None:
            reset()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(walls), 3),
        "p90_s": round(pct(walls, 0.9) or 0.0, 3),
    }


def time_hyperfine(cmd: list[str], runs: int, prepare: str | None, work: Path) -> dict[str, float]:
    out = work / "hyperfine.json"
    assert HYPERFINE is not None
    args = [HYPERFINE, "--warmup", "2", "--runs", str(runs), "-N", "--export-json", str(out)]
    if prepare:
        args += ["--prepare", prepare, "--shell=/bin/sh"]
        args.remove("-N")
    subprocess.run([*args, subprocess.list2cmdline(cmd)], check=True, capture_output=True)
    [result] = json.loads(out.read_text())["results"]
    wall = result.get("summary", {}).get("time_wall_clock", result)  # hyperfine 2's layout, 1's
    return {"mean_s": round(wall["mean"], 3), "median_s": round(wall["median"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--baseline", help="a source tree with an older sax package to time side by side"
    )
    args = parser.parse_args()
    compile_bytecode([REPO, *([Path(args.baseline)] if args.baseline else [])])
    work = Path(tempfile.mkdtemp(prefix="sax-bench-cli-"))
    root, cell = work / "sax_root", "/sax/bench"
    common = ["--sax_cell", cell, "--sax_root", str(root)]
    configure_cell(common, root / "fs")
    admin_port, server_port = free_port(), free_port()
    sax = str(BIN / "sax")
    result: dict[str, Any] = {
        "bench": "cli",
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "hyperfine": HYPERFINE is not None,
    }
    server = [sax, "model-server", *common, "--port", str(server_port), "--backends", "test"]
    with (
        process([sax, "admin-server", *common, "--port", str(admin_port)], work / "admin.log"),
        process(server, work / "model_server.log"),
    ):
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", 60, work / "admin.log")
        wait_http(f"http://127.0.0.1:{server_port}/healthz", 60, work / "model_server.log")
        saxutil = [str(BIN / "saxutil"), f"--sax_root={root}"]
        subprocess.run(
            [*saxutil, "publish", f"{cell}/echo", "sax.models.test.Echo", "None", "1"], check=True
        )
        subprocess.run([*saxutil, "wait", f"{cell}/echo"], check=True, capture_output=True)
        unpublish_cmd = subprocess.list2cmdline([*saxutil, "unpublish", f"{cell}/cli"])
        for name, cmd in commands(root, cell, args.baseline).items():
            reset = (lambda: unpublish(root, cell)) if name.endswith(" publish") else None
            row: dict[str, Any] = {"subprocess": time_subprocess(cmd, args.runs, reset)}
            if result["hyperfine"]:
                prepare = f"{unpublish_cmd} || true" if reset else None
                row["hyperfine"] = time_hyperfine(cmd, args.runs, prepare, work)
            result[name] = row
    floor = result["python -c pass"]["subprocess"]["median_s"]
    result["target_s"] = TARGET_S
    timer = "hyperfine" if result["hyperfine"] else "subprocess"
    result["met"] = {  # by hyperfine's median where it ran, else by subprocess timing
        name: row[timer]["median_s"] <= TARGET_S
        for name, row in result.items()
        if name.startswith("saxutil")
    }
    result["above_python_floor_s"] = {
        name: round(row["subprocess"]["median_s"] - floor, 3)
        for name, row in result.items()
        if name.startswith(("saxutil ", "baseline "))
    }
    if args.baseline:
        result["new_vs_baseline"] = {
            name: round(
                result[f"saxutil {name}"]["subprocess"]["median_s"]
                / result[f"baseline {name}"]["subprocess"]["median_s"],
                3,
            )
            for name in ("ls", "publish", "lm.generate")
        }
        if result["hyperfine"]:
            result["new_vs_baseline_hyperfine"] = {
                name: round(
                    result[f"saxutil {name}"]["hyperfine"]["median_s"]
                    / result[f"baseline {name}"]["hyperfine"]["median_s"],
                    3,
                )
                for name in ("ls", "publish", "lm.generate")
            }
    result["load_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
