"""Every kind of caller x every kind of credential x every guarded action, on a real cell.

One admin process and one model server process (test backend, its own token) on loopback, with
auth on: ``admin`` is in the cell's admin ACL (``admins``) and in ``readers``, the ACL of the
guarded model's ``lm.generate``; ``bob`` is in neither. Each caller runs each action with no
token, a bad token, bob's token and admin's token, expecting 401, 401, 403 and success; a
refused action changes nothing. Callers: curl, the ``openai`` SDK, the Python client (sync and
async), saxutil, and clients generated from ``openapi/*.json``. Where a caller has no way to do
an action (the openai SDK cannot publish; only a model server joins) the cell is left out.
Also: a token revoked in the config stops working on the admin and on the model server.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

import sax.client
from sax.errors import SaxError
from tests.api.test_generated_clients import Clients, clients  # noqa: F401 (a fixture)
from tests.cell import CELL, ECHO
from tests.helpers import SAXUTIL, wait_for
from tests.security.conftest import EXPECTED, GUARDED, KINDS, Secured


def status_of(call: Callable[[], object]) -> int:
    """200 when `call` succeeds, else the HTTP status of the SaxError it raised."""
    try:
        call()
    except SaxError as exc:
        return exc.http_status
    return 200


# ---------------------------------------------------------------- callers


def curl(secured: Secured, kind: str, method: str, url: str, body: Any = None) -> int:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, url]
    token = secured.token(kind)
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout
    code = int(out)
    return 200 if code in (200, 201) else code


def saxutil(secured: Secured, kind: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "SAX_TOKEN"}
    token = secured.token(kind)
    if token:
        env["SAX_TOKEN"] = token
    run = subprocess.run(
        [SAXUTIL, f"--sax_root={secured.cell.sax_root}", "--sax_timeout=20s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if run.returncode == 0:
        return 200, run.stdout
    for code, status in (("UNAUTHENTICATED", 401), ("PERMISSION_DENIED", 403)):
        if code in run.stderr:
            return status, run.stderr
    raise AssertionError(f"saxutil {args}: {run.stderr}")


# ---------------------------------------------------------------- admin actions


def admin_actions(secured: Secured, caller: str) -> dict[str, Callable[[str, str], int]]:
    """publish / update / unpublish of model `name` with credential `kind`, for one caller."""
    root = secured.cell.sax_root
    admin = f"http://{secured.cell.admin_address}"

    if caller == "curl":
        return {
            "publish": lambda name, kind: curl(
                secured,
                kind,
                "POST",
                f"{admin}/v1/models",
                {"model_id": f"{CELL}/{name}", "model_path": ECHO, "num_replicas": 0},
            ),
            "update": lambda name, kind: curl(
                secured, kind, "PATCH", f"{admin}/v1/models/{name}", {"admin_acl": acl_for(kind)}
            ),
            "unpublish": lambda name, kind: curl(
                secured, kind, "DELETE", f"{admin}/v1/models/{name}"
            ),
        }
    if caller == "client":
        return {
            "publish": lambda name, kind: status_of(
                lambda: sax.client.publish(
                    f"{CELL}/{name}", ECHO, "None", 0, sax_root=root, token=secured.token(kind)
                )
            ),
            "update": lambda name, kind: status_of(
                lambda: sax.client.update(
                    f"{CELL}/{name}",
                    admin_acl=acl_for(kind),
                    sax_root=root,
                    token=secured.token(kind),
                )
            ),
            "unpublish": lambda name, kind: status_of(
                lambda: sax.client.unpublish(
                    f"{CELL}/{name}", sax_root=root, token=secured.token(kind)
                )
            ),
        }
    assert caller == "saxutil"
    return {
        "publish": lambda name, kind: saxutil(
            secured, kind, "publish", f"{CELL}/{name}", ECHO, "None", "0"
        )[0],
        "update": lambda name, kind: saxutil(
            secured, kind, "setacl", f"{CELL}/{name}", acl_for(kind)
        )[0],
        "unpublish": lambda name, kind: saxutil(secured, kind, "unpublish", f"{CELL}/{name}")[0],
    }


def acl_for(kind: str) -> str:
    return "owners" if kind == "inside" else f"pwned-{kind}"


@pytest.mark.parametrize("caller", ["curl", "client", "saxutil"])
def test_publish_update_unpublish_need_the_admin_acls(secured: Secured, caller: str) -> None:
    actions = admin_actions(secured, caller)
    name = f"m-{caller}"
    for kind in KINDS:
        assert actions["publish"](name, kind) == EXPECTED[kind], (caller, "publish", kind)
        assert (secured.model(name) is not None) == (kind == "inside")
    for kind in KINDS:
        assert actions["update"](name, kind) == EXPECTED[kind], (caller, "update", kind)
        found = secured.model(name)
        assert found is not None
        assert found["admin_acl"] == ("owners" if kind == "inside" else "")
    for kind in KINDS:
        assert actions["unpublish"](name, kind) == EXPECTED[kind], (caller, "unpublish", kind)
        assert (secured.model(name) is None) == (kind == "inside")


def test_join_needs_the_admin_acl_and_refusals_change_nothing(secured: Secured) -> None:
    admin = f"http://{secured.cell.admin_address}"
    body = {
        "address": "127.0.0.1:1",
        "servable_model_paths": [ECHO],
        "models": [{"model_id": f"{CELL}/{GUARDED}", "model_path": ECHO, "status": "LOADED"}],
    }
    for kind in KINDS:
        before = [s.address for s in secured.cell.servers().servers]
        status = curl(secured, kind, "POST", f"{admin}/v1/servers:join", body)
        assert status == EXPECTED[kind], kind
        after = [s.address for s in secured.cell.servers().servers]
        if kind != "inside":
            assert after == before
    # Even the admitted join moved nothing: the forged LOADED report is ignored.
    assert secured.cell.loaded(GUARDED) == [secured.data_address]


# ---------------------------------------------------------------- data actions


def test_lm_generate_needs_the_method_acl_from_every_caller(secured: Secured) -> None:
    url = f"http://{secured.data_address}/v1/models/{GUARDED}/lm.generate"
    model_id = f"{CELL}/{GUARDED}"
    for kind in KINDS:
        expected = EXPECTED[kind]
        token = secured.token(kind)
        assert curl(secured, kind, "POST", url, {"text": "hi"}) == expected, ("curl", kind)
        model = sax.client.Model(model_id, sax_root=secured.cell.sax_root, timeout=20, token=token)
        assert status_of(partial(model.lm.generate, "hi")) == expected, ("client", kind)
        assert asyncio.run(async_generate(model_id, secured, token)) == expected, ("async", kind)
        assert saxutil(secured, kind, "lm.generate", model_id, "hi")[0] == expected, kind
    # Streaming is guarded by lm.generate's ACL (it has none of its own).
    stream_url = f"http://{secured.data_address}/v1/models/{GUARDED}/lm.generate_stream"
    for kind in KINDS:
        assert curl(secured, kind, "POST", stream_url, {"text": "hi"}) == EXPECTED[kind], kind
    # The 403 names the method and the ACL; methods without an ACL need no token.
    r = httpx.post(
        url, json={"text": "hi"}, headers={"authorization": f"Bearer {secured.tokens['bob']}"}
    )
    assert "lm.generate" in r.json()["error"]["message"] and "'readers'" in r.text
    score = httpx.post(
        f"http://{secured.data_address}/v1/models/{GUARDED}/lm.score",
        json={"prefix": "", "suffixes": ["a"]},
    )
    assert score.status_code == 200


async def async_generate(model_id: str, secured: Secured, token: str | None) -> int:
    model = sax.client.AsyncModel(model_id, sax_root=secured.cell.sax_root, timeout=20, token=token)
    try:
        await model.lm.generate("hi")
    except SaxError as exc:
        return exc.http_status
    finally:
        from sax.client.async_model import close

        close()
    return 200


def test_openai_chat_is_checked_with_lm_generate_s_acl(secured: Secured) -> None:
    for kind in KINDS:
        # The SDK insists on an api_key; with none, its Authorization header is left out.
        client = openai.OpenAI(
            base_url=f"http://{secured.data_address}/v1",
            api_key=secured.token(kind) or "unused",
            max_retries=0,
        )
        omit: dict[str, Any] = {"Authorization": openai.Omit()} if kind == "none" else {}
        try:
            reply = client.chat.completions.create(
                model=GUARDED,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                extra_headers=omit,
            )
            status = 200
            assert reply.choices[0].message.content
        except openai.APIStatusError as exc:
            status = exc.status_code
        assert status == EXPECTED[kind], kind
        try:
            chunks = client.chat.completions.create(
                model=GUARDED,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                stream=True,
                extra_headers=omit,
            )
            assert list(chunks)
            status = 200
        except openai.APIStatusError as exc:
            status = exc.status_code
        assert status == EXPECTED[kind], ("stream", kind)


# ---------------------------------------------------------------- generated clients


def test_generated_clients_send_the_bearer_token(secured: Secured, clients: Clients) -> None:  # noqa: F811
    admin_models = importlib.import_module("sax_admin_client.models")
    data_models = importlib.import_module("sax_model_client.models")

    def client(kind: str, base_url: str, pkg: ModuleType) -> Any:
        token = secured.token(kind)
        if token is None:
            return pkg.Client(base_url=base_url, timeout=30)
        return pkg.AuthenticatedClient(base_url=base_url, token=token, timeout=30)

    def status(reply: Any) -> int:
        return 200 if reply.status_code in (200, 201) else int(reply.status_code)

    admin_url = f"http://{secured.cell.admin_address}"
    name = "m-generated"
    publish = clients.admin_call("models.publish")
    update = clients.admin_call("models.update_model")
    unpublish = clients.admin_call("models.unpublish")
    for kind in KINDS:
        reply = publish.sync_detailed(
            client=client(kind, admin_url, clients.admin),
            body=admin_models.PublishRequest(
                model_id=f"{CELL}/{name}", model_path=ECHO, checkpoint_path="None", num_replicas=0
            ),
        )
        assert status(reply) == EXPECTED[kind], ("publish", kind)
        assert (secured.model(name) is not None) == (kind == "inside")
    for kind in KINDS:
        reply = update.sync_detailed(
            name,
            client=client(kind, admin_url, clients.admin),
            body=admin_models.UpdateRequest(admin_acl=acl_for(kind)),
        )
        assert status(reply) == EXPECTED[kind], ("update", kind)
        found = secured.model(name)
        assert found is not None and found["admin_acl"] == ("owners" if kind == "inside" else "")
    for kind in KINDS:
        reply = unpublish.sync_detailed(name, client=client(kind, admin_url, clients.admin))
        assert status(reply) == EXPECTED[kind], ("unpublish", kind)
        assert (secured.model(name) is None) == (kind == "inside")

    lm_generate = clients.model_call("data.lm_generate")
    for kind in KINDS:
        reply = lm_generate.sync_detailed(
            GUARDED,
            client=client(kind, f"http://{secured.data_address}", clients.model),
            body=data_models.GenerateRequest(text="hi"),
        )
        assert status(reply) == EXPECTED[kind], ("lm.generate", kind)


# ---------------------------------------------------------------- revocation


def test_a_revoked_token_stops_working_within_seconds(secured: Secured) -> None:
    """carol's token works on the admin and the model server, then `saxutil revoke` removes it
    from the config; both servers refuse it (401) within 10 s, with no restart."""
    token = secured.tokens["carol"]
    headers = {"authorization": f"Bearer {token}"}
    admin = f"http://{secured.cell.admin_address}"
    data = f"http://{secured.data_address}/v1/models/{GUARDED}/lm.generate"

    def publish_status() -> int:
        body = {"model_id": f"{CELL}/carols", "model_path": ECHO, "num_replicas": 0}
        return httpx.post(f"{admin}/v1/models", json=body, headers=headers).status_code

    assert publish_status() == 201
    assert httpx.post(data, json={"text": "hi"}, headers=headers).status_code == 200
    assert saxutil(secured, "inside", "revoke", CELL, "carol")[0] == 200
    revoked = time.monotonic()
    # An empty update needs the admin ACL and changes nothing: a probe that is safe to repeat.
    wait_for(
        lambda: (
            httpx.patch(f"{admin}/v1/models/carols", json={}, headers=headers).status_code == 401
        ),
        10,
    )
    r = httpx.delete(f"{admin}/v1/models/carols", headers=headers)
    assert r.status_code == 401
    wait_for(lambda: httpx.post(data, json={"text": "hi"}, headers=headers).status_code == 401, 10)
    assert time.monotonic() - revoked < 10
    assert secured.model("carols") is not None  # the refused unpublish changed nothing
    listed, out = saxutil(secured, "inside", "principals", CELL)
    assert listed == 200 and "carol" in out and token not in out


def test_saxutil_getacl_and_setacl_for_cells_and_models(secured: Secured) -> None:
    model = f"{CELL}/acl-demo"
    assert saxutil(secured, "inside", "getacl", CELL) == (200, "admins\n")
    assert saxutil(secured, "inside", "publish", model, ECHO, "None", "0")[0] == 200
    assert saxutil(secured, "inside", "getacl", model) == (200, "No admin ACLs set for model.\n")
    assert saxutil(secured, "inside", "setacl", model, "lm.generate", "readers")[0] == 200
    assert saxutil(secured, "inside", "getacl", model, "all") == (200, "lm.generate: readers\n")
    assert saxutil(secured, "inside", "getacl", model, "lm.generate") == (200, "readers\n")
    assert saxutil(secured, "outside", "setacl", model, "lm.generate", "")[0] == 403
    assert saxutil(secured, "inside", "setacl", model, "lm.generate", "")[0] == 200
    assert saxutil(secured, "inside", "getacl", model, "all") == (200, "No ACLs set for model.\n")
    assert saxutil(secured, "inside", "setacl", model, "owners")[0] == 200
    assert sax.client.get_acl(model, sax_root=secured.cell.sax_root) == "owners"
    # A cell's admin ACL lives in its config.json: validated, then rewritten in place.
    run = subprocess.run(
        [SAXUTIL, f"--sax_root={secured.cell.sax_root}", "setacl", CELL, "two words"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "not a valid ACL name" in run.stderr
    assert saxutil(secured, "inside", "setacl", CELL, "admins")[0] == 200
    assert saxutil(secured, "inside", "unpublish", model)[0] == 200
