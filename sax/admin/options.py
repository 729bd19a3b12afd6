"""Settings of one admin server process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdminOptions:
    sax_root: str
    cell: str  # "/sax/<cell>"
    port: int = 10000
    host: str = "127.0.0.1"
    lease_ttl_s: float = 10.0
    lease_renew_s: float = 3.0
    join_poll_timeout_s: float = 5.0
    server_ttl_s: float = 10.0
    watch_timeout_s: float = 30.0
    insecure: bool = False  # serve a non-loopback address with auth off
