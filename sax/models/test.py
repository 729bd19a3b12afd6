"""Deterministic test servables, named as such: they exercise the control and data paths
without an engine and never stand in for an engine feature."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from sax.generation import Sample, SamplingOptions, StreamItem
from sax.server.registry import register
from sax.server.servable import LoadSpec, Servable, ServableConfig


class EchoConfig(ServableConfig):
    load_delay_s: float = 0.0
    reply_delay_s: float = 0.0
    memory_bytes: int = 1 << 20
    chat: bool = False  # echo the chat-wrapped prompt, as an instruct servable would see it


@register("sax.models.test.Echo")
class Echo(Servable):
    """Serves lm.generate by echoing its input; lm.score and lm.embed are deterministic hashes."""

    backend: ClassVar[str] = "test"
    methods: ClassVar[frozenset[str]] = frozenset(
        {"lm.generate", "lm.generate_stream", "lm.score", "lm.embed"}
    )
    Config: ClassVar[type[ServableConfig]] = EchoConfig
    config: EchoConfig

    @classmethod
    def memory_bytes(cls, config: ServableConfig | None = None) -> int:
        return config.memory_bytes if isinstance(config, EchoConfig) else 1 << 20

    async def load(self) -> None:
        if self.config.load_delay_s:
            await asyncio.sleep(self.config.load_delay_s)

    async def unload(self) -> None:
        return None

    async def generate(self, text: str, options: SamplingOptions) -> list[Sample]:
        if self.config.reply_delay_s:
            await asyncio.sleep(self.config.reply_delay_s)
        return [
            Sample(text=text, score=-float(i), num_tokens=len(text.split()))
            for i in range(options.num_samples)
        ]

    async def generate_stream(
        self, text: str, options: SamplingOptions
    ) -> AsyncIterator[list[StreamItem]]:
        done = ""
        for word in text.split(" "):
            piece = word if not done else " " + word
            if self.config.reply_delay_s:
                await asyncio.sleep(self.config.reply_delay_s)
            yield [
                StreamItem(index=i, text=piece, prefix_len=len(done), score=0.0)
                for i in range(options.num_samples)
            ]
            done += piece

    async def score(
        self, prefix: str, suffixes: list[str], extra: Mapping[str, Any]
    ) -> list[float]:
        return [-float(len(s)) for s in suffixes]

    async def embed(self, text: str, extra: Mapping[str, Any]) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()[:8]
        vec = [b / 255.0 for b in digest]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]


@register("sax.models.test.FailToLoad")
class FailToLoad(Servable):
    """Fails every load with a clear reason, to exercise FAILED replicas and load retries."""

    backend: ClassVar[str] = "test"
    methods: ClassVar[frozenset[str]] = frozenset({"lm.generate"})

    async def load(self) -> None:
        raise RuntimeError("FailToLoad always fails to load (test servable)")

    async def unload(self) -> None:
        return None


@register("sax.models.test.HangingLoad")
class HangingLoad(Servable):
    """A load that never finishes and ignores cancellation, as a stuck engine start does: its
    thread waits until `unload` releases it. Exercises load timeouts and bounded unloads."""

    backend: ClassVar[str] = "test"
    methods: ClassVar[frozenset[str]] = frozenset({"lm.generate"})

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        self.release = threading.Event()

    async def load(self) -> None:
        waiting = asyncio.ensure_future(asyncio.to_thread(self.release.wait))
        while not waiting.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(waiting)
        raise RuntimeError("HangingLoad was released by its unload (test servable)")

    async def unload(self) -> None:
        self.release.set()
