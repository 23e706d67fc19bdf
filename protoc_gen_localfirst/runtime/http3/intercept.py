"""grpc.aio client interceptors around HTTP/3 calls.

``H3Channel`` is not a grpc channel, so grpc.aio cannot run its interceptor
chain there; this module runs it the way grpc.aio does. For each call, the
interceptors of the call's kind (``UnaryUnaryClientInterceptor`` for
unary-unary calls, ...) run in order; each gets a ``continuation(details,
request)`` and a ``grpc.aio.ClientCallDetails`` (``method`` as bytes,
``timeout``, ``metadata`` as ``grpc.aio.Metadata``; credentials and
wait_for_ready are None, they mean nothing here) and may change the
details, call the continuation (its result is the ``H3ClientCall``), await
it, or return a response of its own.

What differs from grpc.aio: the chain runs in a task of its own started
with the call, so an interceptor's context variables do not reach the
caller; ``credentials`` in the details are ignored; an interceptor that
returns something else than the call for a streamed response must return
an async iterable of messages (its trailing metadata is then empty).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import grpc
import grpc.aio

_KINDS: dict[str, tuple[type[grpc.aio.ClientInterceptor], str]] = {
    "unary_unary": (grpc.aio.UnaryUnaryClientInterceptor, "intercept_unary_unary"),
    "unary_stream": (grpc.aio.UnaryStreamClientInterceptor, "intercept_unary_stream"),
    "stream_unary": (grpc.aio.StreamUnaryClientInterceptor, "intercept_stream_unary"),
    "stream_stream": (grpc.aio.StreamStreamClientInterceptor, "intercept_stream_stream"),
}

Invoke = Callable[[str, Any, float | None, Any], Any]
"""Start the real call: ``invoke(path, request, timeout, metadata)``."""


def for_kind(
    interceptors: Sequence[grpc.aio.ClientInterceptor], kind: str
) -> tuple[grpc.aio.ClientInterceptor, ...]:
    """The interceptors grpc.aio would run for a call of ``kind``.

    As grpc.aio's channel does it: each interceptor counts for the first of
    unary-unary, unary-stream, stream-unary, stream-stream that it subclasses
    only (one object subclassing two kinds runs for the first kind alone).
    """
    return tuple(i for i in interceptors if _kind_of(i) == kind)


def _kind_of(interceptor: grpc.aio.ClientInterceptor) -> str | None:
    for kind, (cls, _) in _KINDS.items():
        if isinstance(interceptor, cls):
            return kind
    return None


class InterceptedCall:
    """A call whose interceptor chain runs first; grpc.aio's call interface after it."""

    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ClientInterceptor],
        kind: str,
        path: str,
        request: Any,
        timeout: float | None,
        metadata: Any,
        invoke: Invoke,
    ) -> None:
        self._interceptors = interceptors
        self._method = _KINDS[kind][1]
        self._invoke = invoke
        self._call: Any = None
        self._messages: AsyncIterator[Any] | None = None
        # bytes, as grpc.aio's channel gives it (its type stubs say str)
        method: Any = path.encode()
        details = grpc.aio.ClientCallDetails(
            method, timeout, grpc.aio.Metadata(*(metadata or ())), None, None
        )
        self._task: asyncio.Future[Any] = asyncio.ensure_future(self._run(0, details, request))

    async def _run(self, index: int, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        if index == len(self._interceptors):
            method = details.method
            path = method.decode() if isinstance(method, bytes) else str(method)
            metadata = tuple(details.metadata or ())
            self._call = self._invoke(path, request, details.timeout, metadata)
            return self._call

        async def continuation(new_details: grpc.aio.ClientCallDetails, new_request: Any) -> Any:
            return await self._run(index + 1, new_details, new_request)

        intercept = getattr(self._interceptors[index], self._method)
        return await intercept(continuation, details, request)

    # -- grpc.aio's call interface ---------------------------------------------------

    def __await__(self) -> Generator[Any, None, Any]:
        result = yield from self._task.__await__()
        if result is self._call or hasattr(result, "trailing_metadata"):
            response = yield from result.__await__()
            return response
        return result  # an interceptor answered itself

    async def initial_metadata(self) -> grpc.aio.Metadata:
        result = await self._task
        if hasattr(result, "initial_metadata"):
            metadata: grpc.aio.Metadata = await result.initial_metadata()
            return metadata
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        result = await self._task
        if hasattr(result, "trailing_metadata"):
            metadata: grpc.aio.Metadata = await result.trailing_metadata()
            return metadata
        return grpc.aio.Metadata()

    async def read(self) -> Any:
        result = await self._task
        if hasattr(result, "read"):
            return await result.read()
        if self._messages is None:
            self._messages = aiter(result)
        try:
            return await anext(self._messages)
        except StopAsyncIteration:
            return grpc.aio.EOF

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self.read()) is not grpc.aio.EOF:
            yield message

    async def code(self) -> grpc.StatusCode:
        result = await self._task
        code: grpc.StatusCode = (
            await result.code() if hasattr(result, "code") else grpc.StatusCode.OK
        )
        return code

    async def details(self) -> str:
        result = await self._task
        return str(await result.details()) if hasattr(result, "details") else ""

    def cancel(self) -> bool:
        cancelled = self._task.cancel()
        if self._call is not None:
            cancelled = bool(self._call.cancel()) or cancelled
        return cancelled

    def cancelled(self) -> bool:
        return self._task.cancelled() or bool(self._call is not None and self._call.cancelled())

    def done(self) -> bool:
        return self._task.done() and (self._call is None or bool(self._call.done()))
