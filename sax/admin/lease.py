"""The leader lease: exactly one admin serves a cell.

The lease lives in ``location.json`` (address, admin_id, lease_expires_at) and changes only by
compare-and-swap on the file's generation (sax/store.py). An admin becomes leader by writing
its own lease over one that is absent, expired or already its own; the leader renews every
``renew_s`` (about ttl/3); a standby polls until the lease expires. A renewal that loses the
race, or one that cannot land before the lease runs out, deposes the leader.

On a local sax_root the admin also takes an OS lock (``fcntl.flock`` on
``<cell dir>/leader.lock``) in a thread, and writes its admin_id into that file while it holds
it. The kernel drops the lock when its holder dies, even by SIGKILL. A standby that gets the lock
and finds the live lease held by the lock's previous owner knows that leader is dead, and takes
over at once instead of waiting out the TTL. The lock only speeds takeover up; it never lets
anyone override a lease whose holder may be alive:

- with the lock: take the lease if it is absent, ours, expired, or held by the lock's previous
  owner (dead: the kernel gave its lock away);
- without the lock, someone alive holds it: take an *expired* lease at once only from the lock
  holder itself (a stopped leader: SIGSTOP keeps the lock), otherwise give the lock holder, a
  live standby, one TTL to take over first;
- no lock (gs://, memory://): take the lease if it is absent, ours or expired.

`is_leader()` is what the control plane checks before each mutation. It turns False the moment
the lease is marked lost, and also, without any I/O, once the lease's local deadline has passed:
that deadline is measured on the monotonic clock from *before* the winning write began, minus a
margin, so a leader stops believing in its lease before a standby (reading wall-clock
``lease_expires_at``) may take it. Clock skew between hosts beyond the margin is covered by the
generation check on state.json, which a deposed admin cannot pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time

from sax.errors import Code, SaxError
from sax.schemas import Location
from sax.store import CellStore, Generation

log = logging.getLogger(__name__)

LOCK_FILE = "leader.lock"
_RELEASED = "released"


def _read_owner(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _flock_in_thread(path: str, owner: str) -> asyncio.Future[tuple[int, str]]:
    """Takes an exclusive flock on `path` in a daemon thread, records `owner` in the file, and
    resolves to (open fd, previous owner).

    A daemon thread (not the default executor) because the wait can last the life of the
    process and must not hold up interpreter exit. Cancelling the future gives the lock back as
    soon as the thread gets it, without claiming it.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[int, str]] = loop.create_future()

    def deliver(fd: int, previous: str) -> None:
        if fut.cancelled():
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{owner}\n".encode(), 0)
        fut.set_result((fd, previous))

    def fail(exc: BaseException) -> None:
        if not fut.cancelled():
            fut.set_exception(exc)

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            except BaseException:
                os.close(fd)
                raise
        except Exception as exc:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fail, exc)
            return
        try:
            loop.call_soon_threadsafe(deliver, fd, previous)
        except RuntimeError:  # the loop is gone: nobody wants the lock any more
            os.close(fd)

    threading.Thread(target=work, name=f"flock {path}", daemon=True).start()
    return fut


class LeaderLease:
    """One admin's claim on a cell. Use: ``await acquire()``, then ``await run()`` (returns when
    the lease is lost or released) alongside serving, and ``await release()`` on the way out.
    One-shot: an admin that lost its lease exits; a new incarnation makes a new lease."""

    def __init__(
        self,
        store: CellStore,
        address: str,
        admin_id: str,
        *,
        ttl_s: float = 10.0,
        renew_s: float | None = None,
        poll_s: float | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise SaxError(Code.INVALID_ARGUMENT, f"lease ttl must be positive, got {ttl_s}")
        self.store = store
        self.address = address
        self.admin_id = admin_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s if renew_s is not None else ttl_s / 3
        self.poll_s = poll_s if poll_s is not None else min(self.renew_s, 1.0)
        self.margin_s = min(0.2 * ttl_s, 1.0)
        self._gen: Generation = None
        self._valid_until = 0.0  # monotonic deadline of our belief in the lease
        self._held = False
        self._lost_reason = ""
        self._lost = asyncio.Event()
        local_dir = store.local_dir
        self._lock_path = os.path.join(local_dir, LOCK_FILE) if local_dir else None
        self._flock: asyncio.Future[tuple[int, str]] | None = None

    # ------------------------------------------------------------ state

    def is_leader(self) -> bool:
        return self._held and not self._lost.is_set() and time.monotonic() < self._valid_until

    @property
    def lost_reason(self) -> str:
        return self._lost_reason

    def mark_lost(self, reason: str) -> None:
        """Stops serving at once; `run()` returns. Called on a failed renewal, and by a writer
        that found state.json changed under it (another admin is leader)."""
        if self._lost.is_set():
            return
        self._lost_reason = reason
        self._lost.set()
        if self._held and reason != _RELEASED:
            log.warning("Lost leader lease of %s: %s", self.store.cell, reason)

    async def wait_lost(self) -> str:
        await self._lost.wait()
        return self._lost_reason

    def _flock_held(self) -> bool:
        f = self._flock
        return f is not None and f.done() and not f.cancelled() and f.exception() is None

    # ------------------------------------------------------------ acquire / renew

    async def _write_lease(
        self, if_generation: Generation, expires_at: float | None = None
    ) -> None:
        started = time.monotonic()
        loc = Location(
            address=self.address,
            admin_id=self.admin_id,
            lease_expires_at=time.time() + self.ttl_s if expires_at is None else expires_at,
        )
        try:
            self._gen = await asyncio.to_thread(self.store.write_location, loc, if_generation)
        except SaxError as exc:
            if exc.code != Code.FAILED_PRECONDITION:
                raise
            # A retried upload whose first attempt landed reads as a lost race; the exact
            # lease we wrote (admin_id and expiry) being there means we won after all.
            current, gen = await asyncio.to_thread(self.store.read_location)
            if current != loc:
                raise
            self._gen = gen
        self._valid_until = started + self.ttl_s - self.margin_s

    def _observe(self) -> tuple[Location | None, Generation, str]:
        loc, gen = self.store.read_location()
        owner = _read_owner(self._lock_path) if self._lock_path else ""
        return loc, gen, owner

    async def acquire(self) -> None:
        """Blocks until this admin holds the lease."""
        if self._lock_path is not None and self._flock is None:
            self._flock = _flock_in_thread(self._lock_path, self.admin_id)
        expired_seen: tuple[Generation, float] | None = None  # for the lockless standby
        reported = ""
        while True:
            try:
                loc, gen, lock_owner = await asyncio.to_thread(self._observe)
            except SaxError:
                raise
            except Exception as exc:  # storage hiccup: keep trying, a standby has time
                log.warning("Reading %s location failed: %s", self.store.cell, exc)
                await asyncio.sleep(self.poll_s)
                continue
            now = time.time()
            holder = loc.admin_id if loc is not None else ""
            expires = loc.lease_expires_at if loc is not None else 0.0
            expired = expires <= now
            if not holder or holder == self.admin_id:
                # Free (or ours). Locally, leave it to the lock holder if there is one alive.
                take = self._flock is None or self._flock_held() or not lock_owner
                if not take:
                    if expired_seen is None or expired_seen[0] != gen:
                        expired_seen = (gen, time.monotonic())
                    take = time.monotonic() - expired_seen[1] > self.ttl_s
            elif self._flock is None:
                take = expired
            elif self._flock_held():
                previous = self._flock.result()[1]
                take = expired or holder == previous
                if take and not expired:
                    log.info("Leader %s is gone (its lock was released)", holder)
            elif not expired:
                take = False
            elif holder == lock_owner:
                take = True  # the lock holder is alive but stopped renewing: depose it
            else:
                if expired_seen is None or expired_seen[0] != gen:
                    expired_seen = (gen, time.monotonic())
                take = time.monotonic() - expired_seen[1] > self.ttl_s
            if take:
                try:
                    await self._write_lease(gen)
                except SaxError as exc:
                    if exc.code != Code.FAILED_PRECONDITION:
                        raise
                    continue  # someone wrote in between: look again
                self._held = True
                log.info("Acquired leader lease of %s as %s", self.store.cell, self.admin_id)
                return
            if holder and holder != reported:
                reported = holder
                log.info(
                    "Lease of %s held by %s (%s), expires in %.1fs",
                    self.store.cell,
                    holder,
                    loc.address if loc is not None else "",
                    expires - now,
                )
            wait = self.poll_s if expired else min(self.poll_s, expires - now + 0.01)
            if self._flock is not None and not self._flock.done():
                await asyncio.wait({self._flock}, timeout=wait)  # the lock wakes us at once
            else:
                await asyncio.sleep(wait)

    async def run(self) -> None:
        """Renews the lease until it is lost or released; then returns."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.renew_s)
                return
            try:
                await self._write_lease(self._gen)
            except SaxError as exc:
                if exc.code == Code.FAILED_PRECONDITION:
                    self.mark_lost(f"another admin took the lease ({exc.message})")
                    return
                log.warning("Renewing the lease of %s failed: %s", self.store.cell, exc)
            except Exception as exc:
                log.warning("Renewing the lease of %s failed: %s", self.store.cell, exc)
            if not self.is_leader() and not self._lost.is_set():
                self.mark_lost("the lease expired before it could be renewed")

    async def release(self) -> None:
        """Steps down: stops serving, lets a standby in at once (expired lease, lock dropped)."""
        was_leader = self.is_leader()
        self.mark_lost(_RELEASED)
        if was_leader:
            try:
                await self._write_lease(self._gen, expires_at=0.0)
            except Exception as exc:  # a standby will take over on expiry instead
                log.info("Could not hand back the lease of %s: %s", self.store.cell, exc)
            else:
                log.info("Released leader lease of %s", self.store.cell)
        self._held = False
        if self._flock is not None:
            if self._flock_held():
                fd = self._flock.result()[0]
                os.ftruncate(fd, 0)  # nobody may read us as a stopped leader any more
                os.close(fd)
            else:
                self._flock.cancel()
            self._flock = None
