"""A cell's files on sax_root / fs_root, with compare-and-swap writes.

    <sax_root>/sax/<cell>/config.json     CellConfig  (admin-config / saxutil create)
    <sax_root>/sax/<cell>/location.json   Location    (the leader admin: address + lease)
    <fs_root>/sax/<cell>/state.json       CellState   (the leader admin: published models)

Every read returns the object's *generation* and every write names the generation it expects
(`None`: the object must not exist). A writer that lost a race gets FAILED_PRECONDITION and
nothing changes: that is what makes the leader lease safe and what stops a deposed admin from
overwriting its successor's state. A write returns only once the data is durable.

Backends, picked by the URL scheme:

- a local path or ``file://``: temp file in the same directory + fsync + ``os.replace`` + fsync of
  the directory. The generation is a counter kept in a sidecar lock file ``.<name>.lock``; the
  compare and the replace happen under an exclusive ``fcntl.flock`` on it (readers take it
  shared), so two processes cannot both win. The counter is bumped (durably) *before* the
  replace, so a crash in between can only cause a spurious conflict, never a lost update.
- ``gs://bucket/prefix``: google-cloud-storage single-object uploads with
  ``if_generation_match`` (0 = must not exist); the object generation is the generation. It
  honours ``STORAGE_EMULATOR_HOST`` (tests run against fake-gcs-server).
- ``memory://``: fsspec's in-process memory filesystem plus a generation counter under a lock,
  for unit tests.

The API is synchronous and blocking; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from sax.errors import Code, SaxError
from sax.naming import CellId, is_valid_name
from sax.schemas import CellConfig, CellState, Location

Generation = str | None  # None: the object does not exist

CONFIG_FILE = "config.json"
LOCATION_FILE = "location.json"
STATE_FILE = "state.json"

_M = TypeVar("_M", bound=BaseModel)


def _describe(gen: Generation) -> str:
    return "absent" if gen is None else f"generation {gen}"


def _lost_race(path: str, expected: Generation, found: str) -> SaxError:
    return SaxError(
        Code.FAILED_PRECONDITION,
        f"{path} changed concurrently: expected {_describe(expected)}, found {found}",
    )


class _Backend(Protocol):
    def read(self, path: str) -> tuple[bytes | None, Generation]: ...

    def write(
        self, path: str, data: bytes, if_generation: Generation, unconditional: bool = False
    ) -> Generation:
        """Compare-and-swap on `if_generation` unless `unconditional`."""
        ...

    def list_dirs(self, path: str) -> list[str]: ...


# ---------------------------------------------------------------- local files


class _LocalBackend:
    """Local directory; see the module docstring for the generation scheme."""

    @staticmethod
    def _lock_path(path: str) -> str:
        head, name = os.path.split(path)
        return os.path.join(head, f".{name}.lock")

    @contextlib.contextmanager
    def _locked(self, path: str, exclusive: bool) -> Iterator[int | None]:
        """Yields the lock file's fd (None when reading and no lock file exists yet)."""
        lock = self._lock_path(path)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o644)
        except FileNotFoundError:
            if exclusive:
                raise
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield fd
        finally:
            os.close(fd)  # also releases the flock

    @staticmethod
    def _counter(fd: int | None) -> int:
        if fd is None:
            return 0
        raw = os.pread(fd, 64, 0).strip()
        return int(raw) if raw else 0

    def _generation(self, path: str, fd: int | None) -> Generation:
        if not os.path.exists(path):
            return None
        return str(self._counter(fd))

    def read(self, path: str) -> tuple[bytes | None, Generation]:
        with self._locked(path, exclusive=False) as fd:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None, None
            return data, str(self._counter(fd))

    def write(
        self, path: str, data: bytes, if_generation: Generation, unconditional: bool = False
    ) -> Generation:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        with self._locked(path, exclusive=True) as fd:
            assert fd is not None
            current = self._generation(path, fd)
            if not unconditional and if_generation != current:
                raise _lost_race(path, if_generation, _describe(current))
            new = self._counter(fd) + 1
            # Bump the counter first: a crash before the replace costs a spurious conflict only.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{new}\n".encode(), 0)
            os.fsync(fd)
            tmp_fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
            try:
                with os.fdopen(tmp_fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return str(new)

    def list_dirs(self, path: str) -> list[str]:
        try:
            return [e.name for e in os.scandir(path) if e.is_dir()]
        except FileNotFoundError:
            return []


# ---------------------------------------------------------------- memory://


class _MemoryBackend:
    """fsspec's process-wide memory filesystem, so other fsspec readers see the same files."""

    _lock = threading.Lock()
    _generations: dict[str, int] = {}
    _counter = 0

    def __init__(self) -> None:
        import fsspec

        self._fs = fsspec.filesystem("memory")

    def read(self, path: str) -> tuple[bytes | None, Generation]:
        with self._lock:
            if not self._fs.exists(path):
                return None, None
            data: bytes = self._fs.cat_file(path)
            return data, str(self._generations.get(path, 0))

    def write(
        self, path: str, data: bytes, if_generation: Generation, unconditional: bool = False
    ) -> Generation:
        with self._lock:
            current = str(self._generations.get(path, 0)) if self._fs.exists(path) else None
            if not unconditional and if_generation != current:
                raise _lost_race(f"memory://{path}", if_generation, _describe(current))
            self._fs.pipe_file(path, data)
            _MemoryBackend._counter += 1
            self._generations[path] = _MemoryBackend._counter
            return str(_MemoryBackend._counter)

    def list_dirs(self, path: str) -> list[str]:
        with self._lock:
            if not self._fs.isdir(path):
                return []
            return [
                e["name"].rstrip("/").rsplit("/", 1)[-1]
                for e in self._fs.ls(path, detail=True)
                if e["type"] == "directory"
            ]


# ---------------------------------------------------------------- gs://


@functools.cache
def _gcs_client() -> Any:
    """One client per process. Against an emulator (STORAGE_EMULATOR_HOST) the library uses
    anonymous credentials; it still wants a project, hence the fallback."""
    from google.cloud import storage

    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project or "sax-test")
    return storage.Client(project=project) if project else storage.Client()


class _GcsBackend:
    """Paths are ``bucket/object/name``; the object generation is the generation."""

    def __init__(self) -> None:
        from google.api_core import exceptions as gexc

        self._exc = gexc

    def _blob(self, path: str) -> Any:
        bucket, _, name = path.partition("/")
        return _gcs_client().bucket(bucket).blob(name)

    def read(self, path: str) -> tuple[bytes | None, Generation]:
        blob = self._blob(path)
        try:
            data: bytes = blob.download_as_bytes()
        except self._exc.NotFound:
            return None, None
        return data, str(blob.generation)

    def write(
        self, path: str, data: bytes, if_generation: Generation, unconditional: bool = False
    ) -> Generation:
        blob = self._blob(path)
        kwargs: dict[str, Any] = {}
        if not unconditional:
            kwargs["if_generation_match"] = 0 if if_generation is None else int(if_generation)
        try:
            blob.upload_from_string(data, content_type="application/json", **kwargs)
        except self._exc.PreconditionFailed as exc:
            raise _lost_race(f"gs://{path}", if_generation, "another version") from exc
        return str(blob.generation)

    def list_dirs(self, path: str) -> list[str]:
        bucket, _, prefix = path.partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        it = _gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/")
        for _ in it:  # prefixes fill in as pages are read
            pass
        return [p[len(prefix) :].rstrip("/") for p in it.prefixes]


# ---------------------------------------------------------------- URL -> backend


def _resolve(root: str) -> tuple[_Backend, str]:
    """(backend, base path) for a sax_root / fs_root URL."""
    if not root:
        raise SaxError(Code.INVALID_ARGUMENT, "empty root: give a directory or a gs:// URL")
    scheme, sep, rest = root.partition("://")
    if not sep:
        return _LocalBackend(), root.rstrip("/") or "/"
    if scheme == "file":
        return _LocalBackend(), rest.rstrip("/") or "/"
    if scheme in ("gs", "gcs"):
        if not rest.split("/", 1)[0]:
            raise SaxError(Code.INVALID_ARGUMENT, f"{root!r} names no bucket")
        return _GcsBackend(), rest.rstrip("/")
    if scheme == "memory":
        return _MemoryBackend(), "/" + rest.strip("/")
    raise SaxError(
        Code.INVALID_ARGUMENT,
        f"unsupported root {root!r}: use a local directory, file://, gs:// or memory://",
    )


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base != "/" else "/" + "/".join(parts)


def _decode(model: type[_M], data: bytes, where: str) -> _M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise SaxError(Code.INTERNAL, f"{where} is not a valid {model.__name__}: {exc}") from exc


def _encode(value: BaseModel) -> bytes:
    return value.model_dump_json(indent=2).encode() + b"\n"


class _CellFiles:
    def __init__(self, root: str, cell: CellId) -> None:
        self.root = root
        self.cell = cell
        self._backend, base = _resolve(root)
        self._dir = _join(base, "sax", cell.cell)

    def _path(self, name: str) -> str:
        return _join(self._dir, name)

    def _url(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/sax/{self.cell.cell}/{name}"


class CellStore(_CellFiles):
    """config.json and location.json of one cell under sax_root."""

    def __init__(self, sax_root: str, cell: CellId) -> None:
        super().__init__(sax_root, cell)

    def exists(self) -> bool:
        return self._backend.read(self._path(CONFIG_FILE))[0] is not None

    def read_config(self) -> CellConfig:
        return self.read_config_versioned()[0]

    def read_config_versioned(self) -> tuple[CellConfig, Generation]:
        """config.json and its generation, for a compare-and-swap `write_config`."""
        data, gen = self._backend.read(self._path(CONFIG_FILE))
        if data is None:
            raise SaxError(
                Code.FAILED_PRECONDITION,
                f"cell {self.cell} is not configured under {self.root!r} (no {self._url(CONFIG_FILE)});"
                f" run `sax admin-config --sax_cell={self.cell} --sax_root={self.root}"
                " --fs_root=...` first",
            )
        return _decode(CellConfig, data, self._url(CONFIG_FILE)), gen

    def write_config(self, config: CellConfig, if_generation: Generation) -> Generation:
        """Rewrites config.json if it is still at `if_generation` (else FAILED_PRECONDITION)."""
        return self._backend.write(self._path(CONFIG_FILE), _encode(config), if_generation)

    def create(self, config: CellConfig, exist_ok: bool = False) -> None:
        """Writes config.json (rewriting it when `exist_ok`) and a placeholder location.json.
        A rewrite keeps the auth settings of the existing config (principals, admin ACL) that
        `config` leaves empty, so re-running ``admin-config`` or ``sax up`` never weakens them
        (``saxutil setacl`` and ``saxutil revoke`` change them)."""
        if not config.fs_root:
            raise SaxError(Code.INVALID_ARGUMENT, "fs_root must not be empty")
        _resolve(config.fs_root)  # reject unsupported URLs now, not when the admin starts
        path = self._path(CONFIG_FILE)
        if exist_ok:
            existing, _ = self._backend.read(path)
            if existing is not None:
                old = _decode(CellConfig, existing, self._url(CONFIG_FILE))
                config = config.model_copy(
                    update={
                        "principals": config.principals or old.principals,
                        "admin_acl": config.admin_acl or old.admin_acl,
                    }
                )
            self._backend.write(path, _encode(config), None, unconditional=True)
        else:
            try:
                self._backend.write(path, _encode(config), None)
            except SaxError as exc:
                if exc.code != Code.FAILED_PRECONDITION:
                    raise
                raise SaxError(
                    Code.ALREADY_EXISTS, f"cell {self.cell} already exists under {self.root!r}"
                ) from exc
        with contextlib.suppress(SaxError):  # another writer made it first: fine
            if self._backend.read(self._path(LOCATION_FILE))[1] is None:
                self._backend.write(self._path(LOCATION_FILE), _encode(Location()), None)

    def read_location(self) -> tuple[Location | None, Generation]:
        data, gen = self._backend.read(self._path(LOCATION_FILE))
        if data is None:
            return None, None
        return _decode(Location, data, self._url(LOCATION_FILE)), gen

    def write_location(self, loc: Location, if_generation: Generation) -> Generation:
        return self._backend.write(self._path(LOCATION_FILE), _encode(loc), if_generation)

    @property
    def local_dir(self) -> str | None:
        """The cell directory when sax_root is local (the leader lock lives there)."""
        return self._dir if isinstance(self._backend, _LocalBackend) else None


class StateStore(_CellFiles):
    """state.json of one cell under fs_root: the published models."""

    def __init__(self, fs_root: str, cell: CellId) -> None:
        super().__init__(fs_root, cell)

    def read(self) -> tuple[CellState, Generation]:
        data, gen = self._backend.read(self._path(STATE_FILE))
        if data is None:
            return CellState(), None
        return _decode(CellState, data, self._url(STATE_FILE)), gen

    def write(self, state: CellState, if_generation: Generation) -> Generation:
        return self._backend.write(self._path(STATE_FILE), _encode(state), if_generation)


def list_cells(sax_root: str) -> list[str]:
    """Sorted names of the cells under `sax_root` that have a config.json."""
    backend, base = _resolve(sax_root)
    names = (n for n in backend.list_dirs(_join(base, "sax")) if is_valid_name(n))
    return sorted(
        n for n in names if backend.read(_join(base, "sax", n, CONFIG_FILE))[0] is not None
    )


__all__ = [
    "CONFIG_FILE",
    "LOCATION_FILE",
    "STATE_FILE",
    "CellStore",
    "Generation",
    "StateStore",
    "list_cells",
]
