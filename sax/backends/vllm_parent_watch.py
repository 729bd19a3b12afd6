"""A vLLM general plugin: an engine-core process of a sax model server exits when the server dies.

vLLM loads ``vllm.general_plugins`` entry points in every engine-core process it starts. When the
model server that started the core is SIGKILLed (or crashes), nothing tells the core, which keeps
its memory (device memory on a GPU host) and ignores SIGTERM. `register` starts a daemon thread in
the core that polls its parent process id; once the parent is gone (the core is re-parented), it
kills the core's own children and then the core.

It acts only in a process whose parent is the model server named by `PARENT_PID_ENV` (set by
`sax.backends.vllm_engine.prepare_process`), so vLLM run by anything else is untouched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

PARENT_PID_ENV = "SAX_ENGINE_PARENT_PID"
POLL_S = 0.5


def register() -> None:
    """The plugin entry point: starts the parent watch in an engine core a model server spawned."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or int(parent) == os.getpid() or os.getppid() != int(parent):
        return
    threading.Thread(
        target=_watch, args=(int(parent),), name="sax-parent-watch", daemon=True
    ).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    with contextlib.suppress(Exception):
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    os.kill(os.getpid(), signal.SIGKILL)
