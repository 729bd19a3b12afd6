"""The blocking face of the async client: each blocking method runs its async twin on a portal.

A face holds an async client object (`aio`) and the `Portal` its coroutines run on; its methods
are made from the async class's own functions, so a blocking call is the async call, retries,
failover and deadlines included, and cannot drift from it (tests/client/test_faces.py compares
the two APIs method by method):

    class LM(Face[AsyncLM]):
        generate = blocking(AsyncLM.generate)                       # a coroutine, awaited
        generate_stream = streaming(AsyncLM.generate_stream, GenerateStream)   # an async iterator
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sax.client.portal import Portal

A = TypeVar("A")
P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")

SHARED = Portal("sax-client")  # the module-level calls' (`on_shared_portal`)


class Face(Generic[A]):
    """The blocking face of `aio`, whose coroutines run on `portal`."""

    def __init__(self, aio: A, portal: Portal) -> None:
        self.aio = aio
        self.portal = portal


class Closing(abc.ABC):
    """``with`` closes it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases what the object holds; calling it again does nothing."""

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Owner(Face[A], Closing):
    """A face that owns its portal: `close` (or leaving ``with``) stops the portal's thread,
    its tasks and connections; a later call starts them again."""

    def close(self) -> None:
        self.portal.close()


def blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Face[A], P], T]:
    """A face method that runs the coroutine `method` of its twin on the portal."""

    @functools.wraps(method)
    def run(face: Face[A], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return face.portal.call(method, face.aio, *args, **kwargs)

    return run


def forward(method: Callable[Concatenate[A, P], T]) -> Callable[Concatenate[Face[A], P], T]:
    """A face method that calls the plain (not async) `method` of its twin."""

    @functools.wraps(method)
    def run(face: Face[A], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(face.aio, *args, **kwargs)

    return run


def streaming(
    method: Callable[Concatenate[A, P], S], iterator: Callable[[S, Portal], R]
) -> Callable[Concatenate[Face[A], P], R]:
    """A face method for a `method` that returns an async iterator: it returns the blocking
    `iterator` (a `BlockingIterator`) over it."""

    @functools.wraps(method)
    def run(face: Face[A], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return iterator(method(face.aio, *args, **kwargs), face.portal)

    signature = inspect.signature(method)
    returns = getattr(iterator, "__name__", signature.return_annotation)
    run.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return run


def on_shared_portal(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """A blocking function that runs the coroutine function `fn` on the process's shared portal
    (closed by `sax.client.close` and at exit)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return SHARED.call(fn, *args, **kwargs)

    return run


_END: Any = object()


async def _next(source: AsyncIterator[T]) -> T:
    return await anext(source, _END)


class BlockingIterator(Face[AsyncIterator[T]], Closing, Iterator[T]):
    """Iterates an async iterator on a portal. `close` (or leaving ``with``, or dropping the
    iterator, as a ``break`` out of a ``for`` over it does) closes the async iterator: for a
    stream, its connection, and the server aborts the generation."""

    _closed = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        item = self.portal.call(_next, self.aio)
        if item is _END:
            self._closed = True
            raise StopIteration
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        aclose = getattr(self.aio, "aclose", None)
        if aclose is not None and self.portal.running:
            self.portal.call(aclose)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, or collected on the portal's own thread
            pass
