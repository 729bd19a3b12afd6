"""``sax up``: a whole cell on this machine, for newcomers and demos.

Configures the cell if needed, starts an admin server and one model server as child processes
(logs under ``<sax_root>/../logs``), and with ``--demo`` publishes SmolLM2 and MiniLM on the vLLM
CPU backend and shows the ways to call them: saxutil, curl and the openai SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sax.naming import CellId
from sax.schemas import CellConfig

DEMO_MODELS = (
    ("smollm", "sax.models.vllm.SmolLM2_135M"),
    ("minilm", "sax.models.vllm.MiniLML6"),
)
QUESTION = "Who is Harry Potter's mother?"
STOP_TIMEOUT_S = 120.0  # the model server's drain (30 s) plus its unloads


class DemoFailed(Exception):
    """A demo model did not load; the message says why."""


class _Stopped(Exception):
    """SIGTERM reached `sax up`."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when `sax up` dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    return subprocess.Popen(
        args,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to the process (it drains, unloads and stops its children), then SIGKILL to its
    whole process group if it is not gone within `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group
    proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout_s:.0f}s; see {log}")


def _show(cmd: list[str], env: dict[str, str], max_lines: int = 0) -> int:
    """Prints a command and runs it; with `max_lines`, only the first lines of what it prints.
    Returns its exit code."""
    print(f"\n$ {shlex.join([Path(cmd[0]).name, *cmd[1:]])}", flush=True)
    if not max_lines:
        return subprocess.run(cmd, env=env, check=False).returncode
    out = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    print("\n".join(lines[:max_lines]))
    if len(lines) > max_lines:
        print(f"... ({len(lines) - max_lines} more lines)")
    print(out.stderr, end="", file=sys.stderr, flush=True)
    return out.returncode


def _demo(sax_root: str, cell: str, server_port: int) -> None:
    import sax.client as client

    env = {**os.environ, "SAX_ROOT": sax_root}
    bindir = Path(sys.executable).parent
    saxutil = str(bindir / "saxutil")
    existing = {m.model_id for m in client.list_all(cell, sax_root=sax_root)}
    for name, path in DEMO_MODELS:
        model_id = f"{cell}/{name}"
        if model_id not in existing:
            _show([saxutil, "publish", model_id, path, "None", "1"], env)
    for name, _ in DEMO_MODELS:
        wait = [saxutil, "wait", f"{cell}/{name}", "--timeout", "600", "--fail-fast"]
        if _show(wait, env) != 0:
            raise DemoFailed(f"{cell}/{name} did not load")
    _show([saxutil, "ls", f"{cell}/smollm"], env)
    _show([saxutil, "lm.generate", f"{cell}/smollm", QUESTION], env)
    _show([saxutil, "lm.generate", "--stream", f"{cell}/smollm", "Name three colors."], env)
    _show([saxutil, "lm.embed", f"{cell}/minilm", "I like eating apples."], env, max_lines=6)
    body = {
        "model": "smollm",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 48,
    }
    _show(
        [
            "curl",
            "-sS",
            f"http://127.0.0.1:{server_port}/v1/chat/completions",
            "-H",
            "content-type: application/json",
            "-d",
            json.dumps(body),
        ],
        env,
    )
    print("\n$ python  # the openai SDK against the model server")
    from openai import OpenAI

    oai = OpenAI(base_url=f"http://127.0.0.1:{server_port}/v1", api_key="unused")
    reply = oai.chat.completions.create(
        model="smollm", messages=[{"role": "user", "content": QUESTION}], max_tokens=48
    )
    print(reply.choices[0].message.content, flush=True)


def run_local_cell(
    *, sax_root: str, fs_root: str, cell: str, admin_port: int, server_port: int, demo: bool
) -> int:
    from sax.store import CellStore

    CellStore(sax_root, CellId.parse(cell)).create(CellConfig(fs_root=fs_root), exist_ok=True)
    logs = Path(sax_root).parent / "logs" if "://" not in sax_root else Path(".sax/logs")
    launch = [sys.executable, "-m", "sax.cli.launch"]
    common = ["--sax_cell", cell, "--sax_root", sax_root]
    admin = _spawn(
        [*launch, "admin-server", *common, "--port", str(admin_port)], logs / "admin.log"
    )
    server = _spawn(
        [*launch, "model-server", *common, "--port", str(server_port)], logs / "model-server.log"
    )
    procs = [admin, server]
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        _wait_http(f"http://127.0.0.1:{admin_port}/healthz", admin, logs / "admin.log", 60)
        _wait_http(f"http://127.0.0.1:{server_port}/healthz", server, logs / "model-server.log", 60)
        print(
            f"Cell {cell} is up: admin http://127.0.0.1:{admin_port}/ (status page, /docs), "
            f"model server http://127.0.0.1:{server_port}/docs; logs in {logs}",
            flush=True,
        )
        print(f"Try: export SAX_ROOT={sax_root}; saxutil ls {cell}", flush=True)
        if demo:
            _demo(sax_root, cell, server_port)
        print("\nThe cell keeps serving; Ctrl-C stops it.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print(f"A process of the cell exited; see {logs}", file=sys.stderr, flush=True)
        return 1
    except DemoFailed as exc:
        print(f"\nThe demo failed: {exc}; see {logs / 'model-server.log'}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        # Model server first: it leaves the cell, drains, unloads its engines; then the admin.
        print("Stopping the cell...", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt, _Stopped):
            _stop(server, STOP_TIMEOUT_S)
            _stop(admin, 15)
        signal.signal(signal.SIGTERM, previous)
