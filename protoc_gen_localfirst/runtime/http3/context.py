"""The servicer context handlers get on HTTP/3: grpc.aio's, re-implemented.

``H3ServicerContext`` implements ``grpc.aio.ServicerContext`` over one HTTP/3
request stream (an ``H3ServerCall`` from ``server_call``), so the same handler
objects (servicers, the health servicer, ``server.announce``'s wrapping
context) run unchanged on both transports. What it does, as grpc.aio does:

* ``abort(code, details, trailing_metadata)`` records the status and raises
  ``grpc.aio.AbortError``; the call then ends with that status.
* ``set_code``/``set_details``/``set_trailing_metadata`` shape the final status
  of a handler that returns normally; ``code()``/``details()`` read them back.
* ``send_initial_metadata`` sends response headers now (once); ``write``
  sends one response message (headers first if not yet sent) and waits while
  the stream's send backlog is over the high-water mark (backpressure).
* ``read()`` returns the next request message, ``grpc.aio.EOF`` at the end.
* ``invocation_metadata()`` is the request's user metadata (``-bin`` values
  as bytes); ``time_remaining()`` is seconds to the ``grpc-timeout`` deadline
  (``math.inf`` without one); ``peer()`` is ``ipv4:1.2.3.4:5`` style.
* ``cancelled()`` is true once the client reset the stream, the deadline
  passed or the server cancelled the call.

Compression calls are accepted and ignored (responses are never compressed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, Protocol

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.wire import Metadata

__all__ = ["H3CallLike", "H3ServicerContext"]

_MetadataArg = grpc.aio.Metadata | Iterable[tuple[str, str | bytes]]


class H3CallLike(Protocol):
    """What the context needs from the stream it serves (``server_call.H3ServerCall``)."""

    metadata: Metadata
    peer: str
    headers_sent: bool

    def time_remaining(self) -> float | None: ...
    def is_cancelled(self) -> bool: ...
    def is_done(self) -> bool: ...
    async def send_headers(self, metadata: Metadata) -> None: ...
    async def send_message(self, data: bytes) -> None: ...
    async def receive_message(self) -> bytes | None: ...


def _pairs(metadata: _MetadataArg | None) -> Metadata:
    return tuple((key, value) for key, value in (metadata or ()))


class H3ServicerContext(grpc.aio.ServicerContext[Any, Any]):
    """grpc.aio's servicer context for a call served over HTTP/3."""

    def __init__(
        self,
        call: H3CallLike,
        request_deserializer: Callable[[bytes], Any] | None,
        response_serializer: Callable[[Any], bytes] | None,
    ) -> None:
        self._call = call
        self._deserialize = request_deserializer or (lambda data: data)
        self._serialize = response_serializer or (lambda message: message)
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._done_callbacks: list[Callable[[Any], None]] = []

    # --- the status the call ends with -------------------------------------

    @property
    def final_code(self) -> grpc.StatusCode | None:
        """The code set by ``set_code``/``abort`` (None: not set)."""
        return self._code

    def run_done_callbacks(self) -> None:
        """Called by the server once the call is over."""
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            callback(self)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: _MetadataArg = (),
    ) -> NoReturn:
        if code == grpc.StatusCode.OK:
            # grpc.aio refuses this too: abort must end the call with an error.
            code, details = grpc.StatusCode.UNKNOWN, details or "abort() called with OK"
        self._code = code
        self._details = details
        pairs = _pairs(trailing_metadata)
        if pairs:
            self._trailing = pairs
        raise grpc.aio.AbortError(details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code  # type: ignore[return-value]  # None until set, as grpc

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: _MetadataArg) -> None:
        self._trailing = _pairs(trailing_metadata)

    def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._trailing)

    @property
    def trailing_pairs(self) -> Metadata:
        return self._trailing

    # --- messages and headers ------------------------------------------------

    async def send_initial_metadata(self, initial_metadata: _MetadataArg) -> None:
        if self._call.headers_sent:
            raise grpc.aio.UsageError("initial metadata already sent")
        await self._call.send_headers(_pairs(initial_metadata))

    async def write(self, message: Any) -> None:
        await self._call.send_message(self._serialize(message))

    async def read(self) -> Any:
        data = await self._call.receive_message()
        if data is None:
            return grpc.aio.EOF
        return self._deserialize(data)

    # --- information -----------------------------------------------------------

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return grpc.aio.Metadata(*self._call.metadata)

    def time_remaining(self) -> float:
        remaining = self._call.time_remaining()
        return math.inf if remaining is None else max(0.0, remaining)

    def peer(self) -> str:
        return self._call.peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {"transport_security_type": [b"tls"]}

    def set_compression(self, compression: grpc.Compression) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def add_done_callback(self, callback: Any) -> None:
        self._done_callbacks.append(callback)

    def cancelled(self) -> bool:
        return self._call.is_cancelled()

    def done(self) -> bool:
        return self._call.is_done()
