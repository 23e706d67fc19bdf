"""Dispatch as grpc.aio does it: the interceptor chain over generic handlers.

``Dispatcher.find`` runs the server's interceptors (``NodeAnnouncer`` first)
around a lookup in the same ``grpc.GenericRpcHandler``s the HTTP/2 server got;
``HandlerCollector`` stands in for a grpc server so ``add_*_to_server``
functions (the health service) leave their generic handlers with us.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.wire import Metadata

__all__ = ["Dispatcher", "HandlerCollector"]


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: Metadata) -> None:
        self.method = method
        self.invocation_metadata = metadata


class Dispatcher:
    """Finds the ``grpc.RpcMethodHandler`` for a method as grpc.aio would."""

    def __init__(
        self,
        generic_handlers: Sequence[grpc.GenericRpcHandler],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.generic_handlers = list(generic_handlers)
        self.interceptors = list(interceptors)
        self._chain_for: tuple[grpc.aio.ServerInterceptor, ...] | None = None
        self._chain: Callable[[grpc.HandlerCallDetails], Awaitable[Any]] = self._lookup

    async def _lookup(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        for generic in self.generic_handlers:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    async def find(self, method: str, metadata: Metadata) -> grpc.RpcMethodHandler[Any, Any] | None:
        interceptors = tuple(self.interceptors)
        if interceptors != self._chain_for:  # built once, again if the list changed
            self._chain, self._chain_for = self._build_chain(interceptors), interceptors
        handler: grpc.RpcMethodHandler[Any, Any] | None = await self._chain(
            _CallDetails(method, metadata)
        )
        return handler

    def _build_chain(
        self, interceptors: tuple[grpc.aio.ServerInterceptor, ...]
    ) -> Callable[[grpc.HandlerCallDetails], Awaitable[Any]]:
        """The interceptors around the lookup, outermost first (as grpc.aio runs them)."""
        chain: Callable[[grpc.HandlerCallDetails], Awaitable[Any]] = self._lookup
        for interceptor in reversed(interceptors):
            chain = _wrap(interceptor, chain)
        return chain


def _wrap(
    interceptor: grpc.aio.ServerInterceptor,
    following: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
) -> Callable[[grpc.HandlerCallDetails], Awaitable[Any]]:
    async def call(details: grpc.HandlerCallDetails) -> Any:
        return await interceptor.intercept_service(following, details)

    return call


class HandlerCollector:
    """Stands in for a grpc server where ``add_*_to_server`` functions register.

    ``health_pb2_grpc.add_HealthServicer_to_server(servicer, collector)``
    leaves the health service's generic handler in ``generic_handlers``.
    """

    def __init__(self) -> None:
        self.generic_handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic_handlers.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.generic_handlers.append(grpc.method_handlers_generic_handler(service, handlers))
