"""grpc.aio.Channel's four multi-callable factories, routed to one method.

``H3Channel`` and ``AutoChannel`` subclass ``MultiCallableChannel`` and
implement ``_multicallable(kind, method, serializer, deserializer)`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc.aio


class MultiCallableChannel(grpc.aio.Channel):
    """grpc.aio.Channel's four multi-callable factories, routed to ``_multicallable``."""

    def _multicallable(self, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        raise NotImplementedError

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._multicallable("unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._multicallable(
            "unary_stream", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._multicallable(
            "stream_unary", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._multicallable(
            "stream_stream", method, request_serializer, response_deserializer
        )
