"""Running the items of one batched request (N prompts, N inputs, N suffixes) together.

The items run in an `asyncio.TaskGroup`: the first failure cancels its siblings at once (their
engine requests are aborted by cancellation) and the caller sees that one error, not a group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sax.errors import SaxError

T = TypeVar("T")


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a failed group: a `SaxError` if any, else the first one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, SaxError):
            return exc
    return leaves[0]


async def run_all(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Results of `calls` in order; the first failure cancels the rest and is raised alone."""
    if len(calls) == 1:
        return [await calls[0]()]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_call(c)) for c in calls]
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    return [t.result() for t in tasks]


async def _call(call: Callable[[], Awaitable[T]]) -> T:
    return await call()
