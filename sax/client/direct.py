"""Blocking one-shot calls without an event loop, for a process that makes one call and exits.

The client proper (`sax.Model`, the admin calls of `sax.client`) runs the asyncio client on a
loop thread and returns pydantic models: right for a process that makes many calls, but each
``saxutil`` command would pay for that stack (httpx, anyio, asyncio, a thread, pydantic) at
every start. These calls make the same requests with the standard library's `http.client`, one
connection per request, and return the replies' JSON (or raw bytes) for the caller to decode,
with the client's behaviour otherwise:

- the leader admin is found through ``location.json`` (`sax.client.leader`) and re-read after
  UNAVAILABLE; `ADMIN_RETRYABLE` errors are retried with `Backoff`'s delays until the deadline,
  which then raises DEADLINE_EXCEEDED naming the last error;
- a data call finds the ready replicas with one WatchLoc request (long-polling again while none
  is ready), then fails over between them with `Attempts` (the picker's choice, the same
  retryable codes and backoff) until the deadline;
- failures raise `SaxError` with the codes and messages of the asyncio client (a transport
  failure names the same failure kinds: ``ConnectError``, ``ReadTimeout``, ...).

    admin = DirectAdmin(sax_root, CellId.parse("/sax/test"))
    models = admin.request("GET", "/v1/models", deadline=Deadline.after(60))["models"]
    reply = DirectModel("/sax/test/echo", sax_root=..., timeout=60).call(
        "lm.generate", body, deadline, key)          # the replica's JSON reply, as bytes
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from sax.client.attempts import Attempts
from sax.client.credentials import auth_headers
from sax.client.leader import (
    ATTEMPT_TIMEOUT_S,
    DEFAULT_ADMIN_TIMEOUT_S,
    AdminLocator,
    locator,
    resolve_sax_root,
)
from sax.client.picker import prefix_key
from sax.client.replicas import PERMANENT, POLL_DEADLINE_S, ReplicaSet, WatchState, locations_path
from sax.client.retry import Backoff, Deadline, transport_code
from sax.errors import ADMIN_RETRYABLE, Code, SaxError
from sax.naming import CellId, ModelId

CONNECT_TIMEOUT_S = 2.0  # Saxml's model-server dial timeout, as `sax.client.http`
JSON_HEADERS = {"content-type": "application/json"}


class TransportError(Exception):
    """No answer from `address`: `kind` names the failure as httpx does (``ConnectError``,
    ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind

    def error(self, address: str, deadline: Deadline) -> SaxError:
        """The failure as a `SaxError`, coded by `sax.client.retry.transport_code` (`deadline`:
        the call's, to tell its own timeouts from the peer's)."""
        code = transport_code(self.kind, deadline.spent())
        return SaxError(code, f"{address}: {self.kind}: {self or 'no answer'}")


def send(
    address: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to ``http://{address}{path}`` on a fresh connection: (status, body).

    `timeout_s` bounds the connect (at most `CONNECT_TIMEOUT_S`) and then each read and write
    (None: unbounded). Raises `TransportError` when no complete reply comes.
    """
    if timeout_s is not None:
        timeout_s = max(timeout_s, 0.001)  # 0 would make the socket non-blocking
    connect_s = CONNECT_TIMEOUT_S if timeout_s is None else min(CONNECT_TIMEOUT_S, timeout_s)
    conn = http.client.HTTPConnection(address, timeout=connect_s)
    try:
        try:
            conn.connect()
        except TimeoutError as exc:
            raise TransportError("ConnectTimeout", "timed out") from exc
        except OSError as exc:  # refused, unreachable: worded as httpx words it
            raise TransportError("ConnectError", "All connection attempts failed") from exc
        assert conn.sock is not None
        conn.sock.settimeout(timeout_s)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, response.read()
        except TimeoutError as exc:
            raise TransportError("ReadTimeout", "timed out") from exc
        except http.client.RemoteDisconnected as exc:
            raise TransportError("RemoteProtocolError", str(exc)) from exc
        except http.client.HTTPException as exc:
            raise TransportError("RemoteProtocolError", repr(exc)) from exc
        except OSError as exc:
            raise TransportError("ReadError", str(exc)) from exc
    finally:
        conn.close()


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


class DirectAdmin:
    """Admin calls for one cell, blocking; `token`: the bearer token (default:
    `sax.client.credentials`). The blocking twin of `sax.client.admin.AsyncAdminClient.request`."""

    def __init__(self, sax_root: str | None, cell: CellId, token: str | None = None) -> None:
        self.locator: AdminLocator = locator(sax_root, cell)
        self.headers = auth_headers(token)

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> Any:
        """The admin's JSON reply (None when empty) to `method` `path`, sending `body` as JSON.

        Raises the admin's `SaxError`; DEADLINE_EXCEEDED, naming the last error, when the
        deadline ends the retries or a reply does not come in time. An UNAVAILABLE admin is
        forgotten, so the next attempt re-reads location.json (a new leader).
        """
        what = f"admin {method} {path}"
        target = f"{path}?{urllib.parse.urlencode(params)}" if params else path
        headers = dict(self.headers)
        content = None
        if body is not None:
            content = json.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            headers.update(JSON_HEADERS)
        backoff = Backoff(deadline)
        last: SaxError | None = None
        while True:
            address = ""
            try:
                address = self.locator.load()
                status, reply = send(
                    address,
                    method,
                    target,
                    body=content,
                    headers=headers,
                    timeout_s=deadline.cap(attempt_timeout_s),
                )
                if 200 <= status < 300:
                    return json.loads(reply) if reply else None
                error = SaxError.from_reply(status, reply)
            except TransportError as exc:
                error = exc.error(f"admin {address}", deadline)
                if error.code == Code.DEADLINE_EXCEEDED:
                    raise deadline.exceeded(what, last or error) from exc
            except SaxError as exc:
                error = exc
            if error.code == Code.UNAVAILABLE and address:
                self.locator.forget(address)
            if error.code not in ADMIN_RETRYABLE:
                raise error
            last = error
            if deadline.spent():
                raise deadline.exceeded(what, error)
            _sleep(backoff.next_delay() or 0.0)


class DirectModel:
    """Data calls on one published model's replicas, blocking: the one-shot twin of
    `sax.client.AsyncModel.call`. `timeout`: seconds per call, all retries included (None or
    <= 0: no deadline)."""

    def __init__(
        self,
        model_id: str,
        *,
        sax_root: str | None = None,
        timeout: float | None = None,
        token: str | None = None,
    ) -> None:
        self.model_id = ModelId.parse(model_id)
        self.sax_root = resolve_sax_root(sax_root)
        self.timeout = timeout
        self.headers = auth_headers(token, JSON_HEADERS)
        self.admin = DirectAdmin(self.sax_root, self.model_id.cell_id)
        self.replicas = ReplicaSet()
        self._state = WatchState()

    def deadline(self) -> Deadline:
        """The deadline of a call starting now."""
        return Deadline.after(self.timeout)

    def call(self, method: str, body: bytes, deadline: Deadline, key: str | None = None) -> bytes:
        """POSTs `body` to ``method`` on a replica, failing over until `deadline`; the raw
        reply. `key`: the prompt text whose prefix picks the replica (`sax.client.picker`).
        Raises the replica's or the watch's `SaxError` (NOT_FOUND if the model is not
        published), DEADLINE_EXCEEDED when the deadline ends the retries."""
        self._find_replicas(deadline)
        attempts = Attempts(f"{method} on {self.model_id}", self.replicas, deadline, key)
        path = f"/v1/models/{self.model_id.name}/{method}"
        while True:
            address = attempts.pick()
            if address is None:
                self._poll(deadline)  # none ready: wait for the admin's next change
            else:
                try:
                    status, reply = send(
                        address,
                        "POST",
                        path,
                        body=body,
                        headers=self.headers,
                        timeout_s=deadline.remaining(),
                    )
                    if 200 <= status < 300:
                        return reply
                    error = SaxError.from_reply(status, reply)
                except TransportError as exc:
                    error = exc.error(address, deadline)
                finally:
                    attempts.release(address)
                attempts.failed(error, address)
            _sleep(attempts.delay())

    def generate(self, text: str, extra_inputs: Mapping[str, Any] | None = None) -> bytes:
        """``lm.generate`` of `text` (`sax.client.Model.lm.generate_samples`'s request and
        replica choice): the replica's `sax.schemas.GenerateResponse` JSON."""
        deadline = self.deadline()
        request: dict[str, Any] = {"text": text, "extra_inputs": dict(extra_inputs or {})}
        remaining = deadline.remaining()
        if remaining:
            request["timeout_s"] = remaining
        body = json.dumps(request, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return self.call("lm.generate", body.encode(), deadline, prefix_key(text))

    def _find_replicas(self, deadline: Deadline) -> None:
        """Waits for the first WatchLoc answer (as `sax.client.locations.Watcher.wait_first`): a
        set, or a permanent error kept in `replicas` for `Attempts.pick` to raise."""
        backoff = Backoff(Deadline(None))
        while not self._poll(deadline):
            if deadline.expired():
                raise deadline.exceeded(f"finding replicas of {self.model_id}", None)
            delay = backoff.next_delay() or 0.0
            left = deadline.remaining()
            _sleep(delay if left is None else min(delay, left))

    def _poll(self, deadline: Deadline) -> bool:
        """One WatchLoc request, applied to `replicas`; False on a transient error (the next
        request asks for a full set again)."""
        poll = Deadline(time.monotonic() + deadline.cap(POLL_DEADLINE_S))
        try:
            raw = self.admin.request(
                "GET", locations_path(self.model_id), params=self._state.params(), deadline=poll
            )
            changes = [(m["op"], m["address"]) for m in raw.get("changelog", ())]
            values = raw.get("values", []) if raw.get("has_fullset", False) else None
            admin_id, seqno = str(raw["admin_id"]), int(raw["next_seqno"])
        except SaxError as exc:
            if exc.code in PERMANENT:
                self.replicas.fail(exc)
                return True
            self._state.reset()
            return False
        except (KeyError, TypeError, ValueError, AttributeError):  # not a WatchResult
            self._state.reset()
            return False
        self.replicas.update(values, changes)
        self._state.admin_id, self._state.seqno = admin_id, seqno
        return True


# The admin calls saxutil makes, as `sax.client`'s (same arguments, errors and requests), with
# the admin's JSON for the caller to render.


def list_all(
    cell: str, *, sax_root: str | None = None, timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Every model published in `cell` (``/sax/<cell>``) as `sax.schemas.ModelInfo` JSON
    objects, sorted by model id (`sax.client.list_all`)."""
    admin = DirectAdmin(sax_root, CellId.parse(cell))
    raw = admin.request("GET", "/v1/models", deadline=Deadline.after(timeout))
    models: list[dict[str, Any]] = raw.get("models", [])
    return sorted(models, key=lambda m: str(m["model_id"]))


def get(
    model_id: str, *, sax_root: str | None = None, timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S
) -> dict[str, Any]:
    """One published model as a `sax.schemas.ModelInfo` JSON object (`sax.client.list`)."""
    model = ModelId.parse(model_id)
    admin = DirectAdmin(sax_root, model.cell_id)
    info: dict[str, Any] = admin.request(
        "GET", f"/v1/models/{model.name}", deadline=Deadline.after(timeout)
    )
    return info


def publish(
    model_id: str,
    model_path: str,
    checkpoint_path: str,
    num_replicas: int,
    overrides: Mapping[str, Any] | None = None,
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> dict[str, Any]:
    """Publishes a model (`sax.client.publish`'s request, no ACLs); durable on the admin when
    this returns. The published model as a `sax.schemas.ModelInfo` JSON object. ValueError if
    an override is not JSON (NaN, infinity)."""
    model = ModelId.parse(model_id)
    body = {
        "model_id": str(model),
        "model_path": model_path,
        "checkpoint_path": checkpoint_path,
        "num_replicas": num_replicas,
        "overrides": dict(overrides or {}),
        "acls": {},
        "admin_acl": "",
    }
    admin = DirectAdmin(sax_root, model.cell_id, token)
    info: dict[str, Any] = admin.request(
        "POST", "/v1/models", body=body, deadline=Deadline.after(timeout)
    )
    return info


def unpublish(
    model_id: str,
    *,
    sax_root: str | None = None,
    timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S,
    token: str | None = None,
) -> None:
    """Unpublishes a model (`sax.client.unpublish`)."""
    model = ModelId.parse(model_id)
    DirectAdmin(sax_root, model.cell_id, token).request(
        "DELETE", f"/v1/models/{model.name}", deadline=Deadline.after(timeout)
    )
