"""Data ACLs in front of a real vLLM engine: the shared Tiny model behind ``readers``.

The cell config in the server's sax_root gains principals (auth on) and Tiny's assignment an
ACL on ``lm.generate``, applied in place (no reload); both are put back afterwards.
"""

from __future__ import annotations

import asyncio

import httpx

from sax.auth.principals import add_token
from sax.naming import CellId
from sax.schemas import Assignment, CellConfig
from sax.store import CellStore
from tests.vllm.conftest import TINY_ID, TINY_OVERRIDES, Served


def tiny_assignment(acls: dict[str, str]) -> Assignment:
    return Assignment(
        model_id=TINY_ID,
        model_path="sax.models.vllm.Tiny",
        checkpoint_path="None",
        overrides=TINY_OVERRIDES,
        acls=acls,
    )


async def test_lm_generate_and_chat_on_vllm_need_the_acl(model_server: Served) -> None:
    server = model_server.server
    store = CellStore(server.opts.sax_root, CellId.parse(server.opts.cell))
    config = CellConfig(fs_root=f"{server.opts.sax_root}/fs")
    config, alice = add_token(config, "alice", ["readers"])
    config, bob = add_token(config, "bob", [])
    store.create(config, exist_ok=True)
    await server.apply([tiny_assignment({"lm.generate": "readers"})])
    engine = server.get(TINY_ID)
    assert engine is not None and engine.spec.acls == {"lm.generate": "readers"}
    generate = f"{model_server.url}/v1/models/tiny/lm.generate"
    chat = f"{model_server.url}/v1/chat/completions"
    body = {"text": "hello", "extra_inputs": {"per_example_max_decode_steps": 4}}
    messages = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            # The server re-reads the config within its refresh interval (2 s).
            async with asyncio.timeout(10):
                while (await http.post(generate, json=body)).status_code != 401:  # noqa: ASYNC110 (an HTTP outcome, no event)
                    await asyncio.sleep(0.2)
            as_bob = {"authorization": f"Bearer {bob}"}
            as_alice = {"authorization": f"Bearer {alice}"}
            assert (await http.post(generate, json=body, headers=as_bob)).status_code == 403
            r = await http.post(generate, json=body, headers=as_alice)
            assert r.status_code == 200 and r.json()["samples"][0]["num_tokens"] > 0
            assert (await http.post(chat, json=messages)).status_code == 401
            assert (await http.post(chat, json=messages, headers=as_bob)).status_code == 403
            r = await http.post(chat, json=messages, headers=as_alice)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    finally:
        await server.apply([tiny_assignment({})])
        # Auth off again for the other tests on this server (a rewrite would keep principals).
        store.write_config(CellConfig(fs_root=config.fs_root), store.read_config_versioned()[1])
