"""The real SmolLM2-135M-Instruct on vLLM (one engine for this module, ~35 s to start on CPU)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from sax.models.vllm import SmolLM2_135M
from sax.server.servable import LoadSpec


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def smollm2() -> AsyncIterator[SmolLM2_135M]:
    servable = SmolLM2_135M(
        LoadSpec(
            "/sax/test/smollm2",
            "sax.models.vllm.SmolLM2_135M",
            "None",
            {"kv_cache_gib": 0.25, "max_model_len": 512},
        )
    )
    await servable.load()
    try:
        yield servable
    finally:
        await servable.unload()


async def test_chat_answers_with_real_knowledge(smollm2: SmolLM2_135M) -> None:
    question = "What is the capital of France?"
    prompt = smollm2.chat_prompt([{"role": "user", "content": question}])
    assert smollm2.lm_prompt(question) == prompt  # saxutil lm.generate asks it as a user turn
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    [answer] = await smollm2.generate(
        prompt, smollm2.sampling({"per_example_max_decode_steps": 24})
    )
    assert "Paris" in answer.text
    assert answer.score < 0


async def test_default_dtype_follows_the_device(smollm2: SmolLM2_135M) -> None:
    """Published without a dtype, the float32 checkpoint runs in bfloat16, as vLLM's `auto`
    picks on x86 and Arm CPUs; the test servables that compare with float32 ask for it."""
    assert smollm2.config.dtype == "auto"
    assert smollm2.engine is not None and smollm2.engine.dtype == "bfloat16"


async def test_default_batch_limits_are_vllm_serves(smollm2: SmolLM2_135M) -> None:
    """Published without max_num_seqs, the engine batches as `vllm serve` does on this device
    (vLLM's own table for its OpenAI server): on a CPU 128 sequences and 2,048 tokens per step;
    sax's former 256 sequences made every decode step costlier."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world_size=1)
    served = (seqs[UsageContext.OPENAI_API_SERVER], tokens[UsageContext.OPENAI_API_SERVER])
    if current_platform.is_cpu():
        assert served == (128, 2048)
    assert smollm2.config.max_num_seqs is None
    assert smollm2.engine is not None and smollm2.engine.batch_limits == served


async def test_score_prefers_the_true_continuation(smollm2: SmolLM2_135M) -> None:
    paris, banana = await smollm2.score("The capital of France is", [" Paris", " banana"], {})
    assert paris > banana + 3.0  # nats
