"""Settings of one model server process (flags as in the Saxml seed)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
