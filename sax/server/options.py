"""Settings of one model server process (flags as in the Saxml seed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BeforeValidator, ByteSize, TypeAdapter

# A bare k/m/g/t unit, with or without "b" ("2G", "512m", "2GB"), is binary here, as the flags
# always took it; pydantic reads those as decimal (only "GiB" is binary there).
_BINARY_UNIT = re.compile(r"^\s*([0-9.]+)\s*([kmgtKMGT])[iI]?[bB]?\s*$")


def _binary_units(value: Any) -> Any:
    if isinstance(value, str) and (match := _BINARY_UNIT.match(value)):
        return f"{match[1]}{match[2]}iB"
    return value


Bytes = Annotated[ByteSize, BeforeValidator(_binary_units)]
_BYTES: TypeAdapter[ByteSize] = TypeAdapter(Bytes)


def parse_byte_size(text: str) -> int:
    """``"0"``, ``"123"``, ``"16GiB"``, ``"512MiB"``, ``"2G"`` (binary units: 2 GiB) -> bytes;
    ValueError naming the problem otherwise."""
    return int(_BYTES.validate_python(text))


@dataclass(frozen=True)
class ServerOptions:
    sax_root: str
    cell: str  # "/sax/<cell>"
    port: int = 10001
    host: str = "127.0.0.1"
    data_address: str = ""  # what clients call; defaults to host:port
    chip: str = "cpu"
    topology: str = "1"
    tags: tuple[str, ...] = field(default_factory=tuple)
    memory_bytes: int = 0  # 0 = no limit
    backends: tuple[str, ...] = ()  # () = every installed backend
    max_concurrent_loads: int = 2
    max_inflight_per_method: int = 256
    default_timeout_s: float = 600.0
    token: str = field(default="", repr=False)  # this server's credential for joins
    insecure: bool = False  # serve a non-loopback address with auth off
    max_body_bytes: int = 64 << 20  # data requests; larger bodies get 413
    # Shutdown: requests in flight may finish for `drain_timeout_s` after the admin stopped
    # routing to this server; each unload (and a cancelled load's clean-up) is bounded by
    # `unload_timeout_s`, after which it is abandoned and logged.
    drain_timeout_s: float = 30.0
    unload_timeout_s: float = 60.0
