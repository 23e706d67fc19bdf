"""grpc method handlers from the method table: servicer methods as grpc.aio behaviours.

Servicer methods are grpc.aio style and run on the event loop:

* unary response (unary-unary, stream-unary): ``async def M(self, request,
  context) -> Response``; for client streaming ``request`` is an async
  iterator of requests.
* streaming response (unary-stream, stream-stream): an async generator
  (``async def M(...): yield ...``), or a plain ``def`` returning an async
  iterator (what generated stubs do), or an ``async def`` that writes with
  ``await context.write(...)`` and returns ``None``.

A plain (sync) ``def`` that returns a message also works but runs on the
event loop, so it must not block. ``NotImplementedError`` from a handler
(what grpc's generated ``_pb2_grpc`` base methods raise) becomes
UNIMPLEMENTED; a servicer without the method attribute at all also answers
UNIMPLEMENTED.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.server.binding import Binding
from protoc_gen_localfirst.schema import MethodInfo, MethodKind

__all__ = [
    "NOT_IMPLEMENTED",
    "ServicerContext",
    "abort_unimplemented",
    "generic_handler",
    "method_handler",
    "unimplemented_stream",
]

ServicerContext = grpc.aio.ServicerContext

NOT_IMPLEMENTED = "Method not implemented!"


async def abort_unimplemented(context: ServicerContext[Any, Any]) -> NoReturn:
    """Finish the call with UNIMPLEMENTED, as grpc's generated stubs do."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_IMPLEMENTED)


async def unimplemented_stream(context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    """An async iterator that aborts the call with UNIMPLEMENTED when iterated."""
    await abort_unimplemented(context)
    yield  # pragma: no cover - makes this an async generator


async def _abort_not_implemented(
    context: ServicerContext[Any, Any], error: NotImplementedError
) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(error) or NOT_IMPLEMENTED)


def _unary_behaviour(impl: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
        try:
            result = impl(request, context)
            if inspect.isawaitable(result):
                result = await result
        except NotImplementedError as error:
            await _abort_not_implemented(context, error)
        return result

    return unary


def _stream_behaviour(impl: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            result = impl(request, context)
            if inspect.isawaitable(result):
                result = await result  # None from a context.write style handler
            if result is None:
                return
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            else:
                for response in result:
                    yield response
        except NotImplementedError as error:
            await _abort_not_implemented(context, error)

    return stream


async def _unimplemented_unary(request: Any, context: ServicerContext[Any, Any]) -> NoReturn:
    await abort_unimplemented(context)


def _unimplemented_streaming(request: Any, context: ServicerContext[Any, Any]) -> Any:
    return unimplemented_stream(context)


_HANDLER_FACTORIES: dict[MethodKind, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    MethodKind.UNARY_UNARY: grpc.unary_unary_rpc_method_handler,
    MethodKind.UNARY_STREAM: grpc.unary_stream_rpc_method_handler,
    MethodKind.STREAM_UNARY: grpc.stream_unary_rpc_method_handler,
    MethodKind.STREAM_STREAM: grpc.stream_stream_rpc_method_handler,
}


def method_handler(
    method: MethodInfo[Any, Any], servicer: object
) -> grpc.RpcMethodHandler[Any, Any]:
    """The grpc handler for one rpc of ``servicer`` (UNIMPLEMENTED if it lacks it)."""
    impl = getattr(servicer, method.handler_name, None)
    if method.kind.server_streaming:
        behaviour = _stream_behaviour(impl or _unimplemented_streaming)
    else:
        behaviour = _unary_behaviour(impl or _unimplemented_unary)
    return _HANDLER_FACTORIES[method.kind](
        behaviour,
        request_deserializer=method.deserialize_request,
        response_serializer=method.serialize_response,
    )


def generic_handler(binding: Binding) -> grpc.GenericRpcHandler:
    """A grpc generic handler serving ``binding`` from its method table."""
    handlers = {m.name: method_handler(m, binding.servicer) for m in binding.service.methods}
    return grpc.method_handlers_generic_handler(binding.service.name, handlers)
