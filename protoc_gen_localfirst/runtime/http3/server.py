"""gRPC over HTTP/3: a QUIC listener that serves grpc handlers (gRFC G2).

``start_server`` (in ``server``) starts one of these next to the grpc.aio
HTTP/2 server when ``http3=True``: UDP, same port number, TLS, ALPN ``h3``.
The protocol work (framing, headers, status, timeouts) is ``wire``; this
module is the I/O around it, on qh3 (default) or aioquic (same API; picked
with ``quic_library``, so benchmarks compare both on this code).

Handlers
--------
Calls are dispatched exactly as grpc.aio dispatches them: the server's
interceptors (``NodeAnnouncer`` first, so node announcement, UNIMPLEMENTED
for unknown methods and UNAVAILABLE while stopping behave the same on both
transports) wrap a lookup in the same ``grpc.GenericRpcHandler``s the
HTTP/2 server got (from the method table, plus health). The resulting
``grpc.RpcMethodHandler`` is driven here with an ``H3ServicerContext``
(``h3_context``), a re-implementation of grpc.aio's context over one
request stream. Unary requests are read to the end of the request stream
before the handler runs (exactly one message, else INTERNAL); streaming
requests are an async iterator (or ``context.read()``).

A unary response's headers, message and trailers are queued together and
leave in one transmit (see ``server_announce`` for why that matters).

Per stream
----------
``H3Call`` holds a stream's state: message decoder, queued request messages,
handler task, deadline timer. It is in ``H3ConnectionHandler.calls`` from
the request HEADERS until the final status is queued (or the stream was
reset), then removed; ``calls`` is what the tests watch for leaks.

* ``grpc-timeout``: the handler task is cancelled at the deadline, the client
  gets DEADLINE_EXCEEDED (trailers), and STOP_SENDING(H3_REQUEST_CANCELLED)
  if it was still sending.
* Client RESET_STREAM or STOP_SENDING: the handler task is cancelled (the
  context reports ``cancelled()``), our side is reset with
  H3_REQUEST_CANCELLED, nothing else is sent.
* Malformed request headers (``wire.parse_request_headers`` with
  ``h3_error``, or qh3/aioquic's own header validation): only that stream is
  reset (H3_MESSAGE_ERROR); the libraries would close the whole connection,
  so ``_StreamErrorsH3`` catches their ``MessageError`` per request stream.
  Frame-level garbage (bad frame lengths, DATA before HEADERS) stays a
  connection error, as RFC 9114 requires; other connections are unaffected.
* Not gRPC: 405 for a non-POST, 415 for a non-``application/grpc`` type
  (trailers-only, with grpc-status INTERNAL), then STOP_SENDING(H3_NO_ERROR).
* Bad framing in DATA (compressed flag without grpc-encoding, truncated
  message at end of stream) -> INTERNAL; a length prefix over
  ``max_message_size`` -> RESOURCE_EXHAUSTED; both end the handler.

Backpressure
------------
Sending: after queueing a message, ``send_message`` waits while the stream's
not-yet-transmitted bytes exceed ``SEND_HIGH_WATER`` (qh3:
``get_send_buffer_size``; aioquic: the stream sender's unsent range), waking
on every receive/transmit of the connection, so a streaming handler cannot
outrun QUIC flow control and congestion control. Receiving: neither library
lets the application withhold flow-control credit, so received request
messages are queued; more than ``max(4 * max_message_size, 16 MiB)`` queued
on one stream fails the call with RESOURCE_EXHAUSTED.

Drain
-----
``goaway()`` sends an HTTP/3 GOAWAY on every connection (id: the next
request stream the client could open) and from then on resets new requests
with H3_REQUEST_REJECTED (UNAVAILABLE: not processed, safe to retry).
``stop(grace)`` = goaway, wait up to ``grace`` for the calls in flight,
cancel the rest (UNAVAILABLE trailers), close every connection
(H3_NO_ERROR) and the UDP socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import importlib
import inspect
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.http3.context import H3ServicerContext
from protoc_gen_localfirst.runtime.wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    H3Error,
    MessageDecoder,
    Metadata,
    RequestHead,
    WireError,
    build_response_headers,
    build_trailers,
    build_trailers_only,
    encode_message,
    parse_request_headers,
)

__all__ = [
    "QUIC_LIBRARIES",
    "SEND_HIGH_WATER",
    "Dispatcher",
    "H3Call",
    "H3ConnectionHandler",
    "H3Server",
    "HandlerCollector",
    "QuicLibrary",
    "UdpPortTaken",
]

_LOG = logging.getLogger("protoc_gen_localfirst.h3_server")

QuicLibrary = Literal["qh3", "aioquic"]
QUIC_LIBRARIES: tuple[QuicLibrary, ...] = ("qh3", "aioquic")

SEND_HIGH_WATER = 256 * 1024
"""Bytes a stream may have queued but not yet transmitted before writers wait."""
_FINISHED_MEMORY = 1024
"""Recently finished stream ids remembered per connection, so late frames for
them are ignored rather than taken as new requests."""
SHUTTING_DOWN = "server is shutting down; call another replica"
CLOSE_LINGER = 0.05
"""Seconds between the last queued response and closing the connections on stop."""


class UdpPortTaken(OSError):
    """The UDP port for HTTP/3 is in use (the TCP one was free)."""


# ---------------------------------------------------------------------------
# The QUIC library, loaded by name (qh3 and aioquic share this API)


@dataclass(frozen=True)
class _Lib:
    name: str
    serve: Callable[..., Awaitable[Any]]
    QuicConfiguration: Any
    QuicConnectionProtocol: Any
    H3Connection: Any
    H3_ALPN: list[str]
    HeadersReceived: Any
    DataReceived: Any
    StreamDataReceived: Any
    StreamReset: Any
    StopSendingReceived: Any
    ConnectionTerminated: Any
    ProtocolNegotiated: Any
    MessageError: Any
    ProtocolError: Any
    encode_frame: Callable[[int, bytes], bytes]
    encode_uint_var: Callable[[int], bytes]
    GOAWAY: int


def _load(name: str) -> _Lib:
    if name not in QUIC_LIBRARIES:
        raise ValueError(f"quic_library must be one of {', '.join(QUIC_LIBRARIES)}, got {name!r}")
    asyncio_mod = importlib.import_module(f"{name}.asyncio")
    h3 = importlib.import_module(f"{name}.h3.connection")
    h3_events = importlib.import_module(f"{name}.h3.events")
    quic_events = importlib.import_module(f"{name}.quic.events")
    config = importlib.import_module(f"{name}.quic.configuration")
    if name == "qh3":
        encode_uint_var = h3.encode_uint_var
    else:
        encode_uint_var = importlib.import_module("aioquic.buffer").encode_uint_var
    return _Lib(
        name=name,
        serve=asyncio_mod.serve,
        QuicConfiguration=config.QuicConfiguration,
        QuicConnectionProtocol=asyncio_mod.QuicConnectionProtocol,
        H3Connection=h3.H3Connection,
        H3_ALPN=list(h3.H3_ALPN),
        HeadersReceived=h3_events.HeadersReceived,
        DataReceived=h3_events.DataReceived,
        StreamDataReceived=quic_events.StreamDataReceived,
        StreamReset=quic_events.StreamReset,
        StopSendingReceived=quic_events.StopSendingReceived,
        ConnectionTerminated=quic_events.ConnectionTerminated,
        ProtocolNegotiated=quic_events.ProtocolNegotiated,
        MessageError=h3.MessageError,
        ProtocolError=h3.ProtocolError,
        encode_frame=h3.encode_frame,
        encode_uint_var=encode_uint_var,
        GOAWAY=int(h3.FrameType.GOAWAY),
    )


def _stream_errors_h3(lib: _Lib) -> Any:
    """``lib.H3Connection`` whose malformed request headers reset one stream.

    qh3 and aioquic turn a ``MessageError`` (bad header names, pseudo-headers
    out of order, ...) on any request stream into a connection close. RFC
    9114 (4.1.2) makes a malformed request a *stream* error, so catch it for
    client-initiated bidirectional streams and hand it to ``on_stream_error``.
    """

    class _StreamErrorsH3(lib.H3Connection):  # type: ignore[misc, name-defined]
        on_stream_error: Callable[[int, str], None] = staticmethod(lambda sid, why: None)

        def handle_event(self, event: Any) -> list[Any]:
            done = bool(getattr(self, "_is_done", False))
            if not done and isinstance(event, lib.StreamDataReceived) and event.stream_id % 4 == 0:
                try:
                    return list(self._receive_stream_data(event))
                except lib.MessageError as error:
                    self._stream.pop(event.stream_id, None)
                    self.on_stream_error(event.stream_id, str(error))
                    return []
                except lib.ProtocolError as error:
                    self._is_done = True
                    self._quic.close(error_code=error.error_code, reason_phrase=error.reason_phrase)
                    return []
            return list(super().handle_event(event))

    return _StreamErrorsH3


def _send_backlog(quic: Any, stream_id: int) -> int:
    """Bytes queued on ``stream_id`` and not yet transmitted."""
    size = getattr(quic, "get_send_buffer_size", None)
    if size is not None:  # qh3
        return int(size(stream_id))
    stream = quic._streams.get(stream_id)  # aioquic
    if stream is None:
        return 0
    sender = stream.sender
    return max(0, int(sender._buffer_stop) - int(sender.next_offset))


def _format_peer(addr: Any) -> str:
    if not addr:
        return "unknown"
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"ipv4:{ip.ipv4_mapped}:{port}"
    if ip.version == 6:
        return f"ipv6:[{ip}]:{port}"
    return f"ipv4:{ip}:{port}"


# ---------------------------------------------------------------------------
# Dispatch: grpc.aio's interceptor chain over generic handlers


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

    async def _lookup(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        for generic in self.generic_handlers:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    async def find(self, method: str, metadata: Metadata) -> grpc.RpcMethodHandler[Any, Any] | None:
        details = _CallDetails(method, metadata)

        def step(index: int) -> Callable[[grpc.HandlerCallDetails], Awaitable[Any]]:
            if index == len(self.interceptors):
                return self._lookup
            interceptor = self.interceptors[index]
            following = step(index + 1)

            async def call(d: grpc.HandlerCallDetails) -> Any:
                return await interceptor.intercept_service(following, d)

            return call

        handler: grpc.RpcMethodHandler[Any, Any] | None = await step(0)(details)
        return handler


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


# ---------------------------------------------------------------------------
# One call


class _Cancel:
    DEADLINE = "deadline"
    CLIENT = "client"
    SERVER = "server"
    WIRE = "wire"


class H3Call:
    """One gRPC call on one HTTP/3 request stream (see the module docstring)."""

    def __init__(
        self,
        conn: H3ConnectionHandler,
        stream_id: int,
        head: RequestHead,
        request_ended: bool,
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.head = head
        self.metadata: Metadata = head.metadata
        self.peer = conn.peer
        self.headers_sent = False
        self.max_message_size = conn.server.max_message_size
        self._decoder = MessageDecoder(self.max_message_size, head.encoding)
        self._messages: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._queue_limit = max(4 * self.max_message_size, 16 * 1024 * 1024)
        self._readable = asyncio.Event()
        self.request_done = False
        self.finished = False
        self._cancel_reason: str | None = None
        self._wire_error: WireError | None = None
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + head.timeout if head.timeout is not None else None
        self._timer = (
            loop.call_later(max(0.0, head.timeout), self._cancel, _Cancel.DEADLINE)
            if head.timeout is not None
            else None
        )
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())
        if request_ended:
            self.feed(b"", True)

    # --- H3CallLike ------------------------------------------------------------

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    def is_cancelled(self) -> bool:
        return self._cancel_reason in (_Cancel.CLIENT, _Cancel.DEADLINE, _Cancel.SERVER)

    def is_done(self) -> bool:
        return self.finished or self._cancel_reason is not None

    async def send_headers(self, metadata: Metadata) -> None:
        self._check_open()
        self.conn.h3.send_headers(
            self.stream_id, build_response_headers(metadata), end_stream=False
        )
        self.headers_sent = True
        self.conn.transmit()

    async def send_message(self, data: bytes) -> None:
        self._check_open()
        if len(data) > self.max_message_size:
            raise WireError(
                f"response message larger than max ({len(data)} vs. {self.max_message_size})",
                status=grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        if not self.headers_sent:
            await self.send_headers(())
        self.conn.h3.send_data(self.stream_id, encode_message(data), end_stream=False)
        self.conn.transmit()
        await self.conn.wait_writable(self)

    async def receive_message(self) -> bytes | None:
        while True:
            if self._messages:
                message = self._messages.popleft()
                self._queued_bytes -= len(message)
                return message
            if self.request_done:
                return None
            self._readable.clear()
            await self._readable.wait()

    # --- events from the connection ---------------------------------------------

    def feed(self, data: bytes, ended: bool) -> None:
        """Request DATA payload (and/or end of stream) arrived."""
        if self.request_done or self._wire_error is not None:
            return
        try:
            messages = self._decoder.feed(data) if data else []
            if ended:
                self._decoder.end()
        except WireError as error:
            self._fail(error)
            return
        for message in messages:
            self._messages.append(message)
            self._queued_bytes += len(message)
        if ended:
            self.request_done = True
        if self._queued_bytes > self._queue_limit:
            self._fail(
                WireError(
                    f"client sent {self._queued_bytes} bytes the handler has not read",
                    status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
            )
            return
        if messages or ended:
            self._readable.set()

    def client_cancelled(self) -> None:
        """The client reset the stream or sent STOP_SENDING."""
        self._cancel(_Cancel.CLIENT)

    def server_cancel(self) -> None:
        """The server stops and the grace is over."""
        self._cancel(_Cancel.SERVER)

    # --- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.finished or self._cancel_reason == _Cancel.CLIENT:
            raise asyncio.CancelledError()

    def _fail(self, error: WireError) -> None:
        self._wire_error = error
        self.request_done = True
        self._readable.set()
        self._cancel(_Cancel.WIRE)

    def _cancel(self, reason: str) -> None:
        if self.finished or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self.task.cancel()

    async def _read_unary(self) -> bytes:
        first = await self.receive_message()
        if first is None:
            raise WireError("request stream ended without a message")
        second = await self.receive_message()
        if second is not None:
            raise WireError("more than one message in a unary request")
        return first

    async def _requests(self, deserialize: Callable[[bytes], Any]) -> AsyncIterator[Any]:
        while True:
            data = await self.receive_message()
            if data is None:
                return
            yield deserialize(data)

    async def _run(self) -> None:
        context: H3ServicerContext | None = None
        final: bytes | None = None
        code = grpc.StatusCode.OK
        details = ""
        try:
            try:
                handler = await self.conn.server.dispatcher.find(self.head.path, self.metadata)
                if handler is None:
                    code, details = grpc.StatusCode.UNIMPLEMENTED, "Method not found!"
                else:
                    context = H3ServicerContext(
                        self, handler.request_deserializer, handler.response_serializer
                    )
                    final = await self._drive(handler, context)
                    if context.final_code is not None:
                        code, details = context.final_code, context.details()
                    if code != grpc.StatusCode.OK:
                        final = None
            except grpc.aio.AbortError:
                assert context is not None
                code = context.final_code or grpc.StatusCode.UNKNOWN
                details = context.details()
            except WireError as error:
                code, details = error.status, error.message
            except asyncio.CancelledError:
                if self._cancel_reason is None:
                    raise
            except Exception as error:  # noqa: BLE001 - a handler bug: UNKNOWN, as grpc.aio answers
                _LOG.exception("error in handler for %s", self.head.path)
                code, details = grpc.StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}"
            reason = self._cancel_reason
            if reason == _Cancel.CLIENT:
                self._reset(H3Error.REQUEST_CANCELLED)
                return
            if reason == _Cancel.DEADLINE:
                code, details, final = grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None
            elif reason == _Cancel.SERVER:
                code, details, final = grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN, None
            elif reason == _Cancel.WIRE and self._wire_error is not None:
                code, details, final = self._wire_error.status, self._wire_error.message, None
            trailing = context.trailing_pairs if context is not None else ()
            self._finish(code, details, trailing, final)
        except asyncio.CancelledError:
            self._reset(H3Error.REQUEST_CANCELLED)
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.finished = True
            self.conn.forget(self)
            if context is not None:
                context.run_done_callbacks()

    async def _drive(
        self, handler: grpc.RpcMethodHandler[Any, Any], context: H3ServicerContext
    ) -> bytes | None:
        """Run the handler; return the serialized unary response, if any."""
        deserialize = handler.request_deserializer or (lambda data: data)
        serialize = handler.response_serializer or (lambda message: message)
        request: Any
        if handler.request_streaming:
            request = self._requests(deserialize)
        else:
            data = await self._read_unary()
            try:
                request = deserialize(data)
            except Exception as error:  # noqa: BLE001 - any parser failure is INTERNAL
                raise WireError(f"Exception deserializing request: {error}") from None
        if handler.request_streaming and handler.response_streaming:
            behaviour = handler.stream_stream
        elif handler.request_streaming:
            behaviour = handler.stream_unary
        elif handler.response_streaming:
            behaviour = handler.unary_stream
        else:
            behaviour = handler.unary_unary
        assert behaviour is not None
        result = behaviour(request, context)  # type: ignore[arg-type]  # grpc.aio-compatible
        if handler.response_streaming:
            if inspect.isawaitable(result):
                result = await result
            if result is None:
                return None
            if hasattr(result, "__aiter__"):
                async for response in result:
                    await context.write(response)
            else:
                for response in result:
                    await context.write(response)
            return None
        if inspect.isawaitable(result):
            result = await result
        if context.final_code not in (None, grpc.StatusCode.OK):
            return None
        data = serialize(result)
        if len(data) > self.max_message_size:
            raise WireError(
                f"response message larger than max ({len(data)} vs. {self.max_message_size})",
                status=grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        return bytes(data)

    def _finish(
        self, code: grpc.StatusCode, details: str, trailing: Metadata, final: bytes | None
    ) -> None:
        """Queue the rest of the response (one transmit) and end our side."""
        if self.finished:
            return
        h3 = self.conn.h3
        try:
            if self.headers_sent or final is not None:
                if not self.headers_sent:
                    h3.send_headers(self.stream_id, build_response_headers(), end_stream=False)
                    self.headers_sent = True
                if final is not None:
                    h3.send_data(self.stream_id, encode_message(final), end_stream=False)
                h3.send_headers(
                    self.stream_id, build_trailers(code, details, trailing), end_stream=True
                )
            else:
                h3.send_headers(
                    self.stream_id, build_trailers_only(code, details, trailing), end_stream=True
                )
            if not self.request_done:
                stop = (
                    H3Error.REQUEST_CANCELLED
                    if self._cancel_reason == _Cancel.DEADLINE
                    else H3Error.NO_ERROR
                )
                self.conn.quic.stop_stream(self.stream_id, stop)
        except Exception as error:  # noqa: BLE001 - stream reset, connection closed, bad metadata
            _LOG.debug("cannot finish stream %d: %s", self.stream_id, error)
            if isinstance(error, ValueError):  # invalid metadata from the handler
                self._reset(H3Error.INTERNAL_ERROR)
        self.finished = True
        self.conn.transmit()

    def _reset(self, error_code: int) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn.reset_stream(self.stream_id, error_code)


# ---------------------------------------------------------------------------
# One connection


class H3ConnectionHandler:
    """The HTTP/3 side of one QUIC connection: events in, calls out."""

    def __init__(self, server: H3Server, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol
        self.quic: Any = protocol._quic
        self.h3: Any = None  # created once ALPN picked h3, as aioquic's examples do
        self.calls: dict[int, H3Call] = {}
        self._finished: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._highest_stream = -4
        self.goaway_id: int | None = None
        self.peer = "unknown"
        self.closed = False
        self._progress = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- called by the protocol --------------------------------------------

    def quic_event(self, event: Any) -> None:
        lib = self.server.lib
        if (
            isinstance(event, lib.StreamDataReceived)
            and event.stream_id in self._finished
            and event.stream_id not in self.calls
        ):
            return  # late data for a stream we are done with
        if isinstance(event, lib.ConnectionTerminated):
            self.closed = True
            for call in list(self.calls.values()):
                call.client_cancelled()
            self.progress()
            self.server.connection_closed(self)
            return
        if self.h3 is None:
            if isinstance(event, lib.ProtocolNegotiated) and event.alpn_protocol in lib.H3_ALPN:
                self.h3 = self.server.h3_class(self.quic)
                self.h3.on_stream_error = self._on_stream_error
                if self.server.closing:
                    self.goaway()
            return
        if isinstance(event, lib.StreamReset | lib.StopSendingReceived):
            reset = self.calls.get(event.stream_id)
            if reset is not None:
                reset.client_cancelled()
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, lib.HeadersReceived):
                self._on_headers(h3_event.stream_id, h3_event.headers, h3_event.stream_ended)
            elif isinstance(h3_event, lib.DataReceived):
                target = self.calls.get(h3_event.stream_id)
                if target is not None:
                    target.feed(h3_event.data, h3_event.stream_ended)

    def progress(self) -> None:
        """Datagrams came in or went out: wake writers waiting for room."""
        self._progress.set()
        self._progress = asyncio.Event()

    # --- used by calls ---------------------------------------------------------

    def transmit(self) -> None:
        if not self.closed:
            self.protocol.transmit()

    async def wait_writable(self, call: H3Call) -> None:
        while (
            not self.closed
            and not call.finished
            and _send_backlog(self.quic, call.stream_id) > SEND_HIGH_WATER
        ):
            await self._progress.wait()
        if self.closed:
            raise asyncio.CancelledError()

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._remember_finished(stream_id)
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.quic.reset_stream(stream_id, error_code)
        with contextlib.suppress(Exception):
            self.quic.stop_stream(stream_id, error_code)
        self.transmit()

    def forget(self, call: H3Call) -> None:
        if self.calls.get(call.stream_id) is call:
            del self.calls[call.stream_id]
            self._remember_finished(call.stream_id)
        if not self.calls:
            self._idle.set()

    # --- drain -----------------------------------------------------------------

    def goaway(self) -> None:
        """Send GOAWAY: requests on streams from the next unseen id are refused."""
        if self.goaway_id is not None or self.closed:
            return
        self.goaway_id = self._highest_stream + 4
        control = self.h3._local_control_stream_id if self.h3 is not None else None
        if control is not None:
            lib = self.server.lib
            frame = lib.encode_frame(lib.GOAWAY, lib.encode_uint_var(self.goaway_id))
            with contextlib.suppress(Exception):
                self.quic.send_stream_data(control, frame)
        self.transmit()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.quic.close(error_code=H3Error.NO_ERROR, reason_phrase="server stopping")
        with contextlib.suppress(Exception):
            self.protocol.transmit()
        self.progress()

    # --- internals -----------------------------------------------------------------

    def _remember_finished(self, stream_id: int) -> None:
        self._finished[stream_id] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _on_stream_error(self, stream_id: int, reason: str) -> None:
        _LOG.debug("stream %d malformed: %s", stream_id, reason)
        call = self.calls.get(stream_id)
        if call is not None:
            call.client_cancelled()
        self._highest_stream = max(self._highest_stream, stream_id)
        self.reset_stream(stream_id, H3Error.MESSAGE_ERROR)

    def _on_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        call = self.calls.get(stream_id)
        if call is not None:  # request trailers: only the end of the stream matters
            if ended:
                call.feed(b"", True)
            return
        if stream_id in self._finished:
            return
        self._highest_stream = max(self._highest_stream, stream_id)
        if self.goaway_id is not None and stream_id >= self.goaway_id or self.server.closing:
            self.reset_stream(stream_id, H3Error.REQUEST_REJECTED)
            return
        try:
            head = parse_request_headers(headers)
        except WireError as error:
            self._refuse(stream_id, error, ended)
            return
        self._idle.clear()
        self.calls[stream_id] = H3Call(self, stream_id, head, ended)

    def _refuse(self, stream_id: int, error: WireError, ended: bool) -> None:
        if error.h3_error is not None:
            self.reset_stream(stream_id, error.h3_error)
            return
        self._remember_finished(stream_id)
        try:
            self.h3.send_headers(
                stream_id,
                build_trailers_only(error.status, error.message, http_status=error.http_status),
                end_stream=True,
            )
            if not ended:
                self.quic.stop_stream(stream_id, H3Error.NO_ERROR)
        except Exception as send_error:  # noqa: BLE001 - stream or connection already gone
            _LOG.debug("cannot refuse stream %d: %s", stream_id, send_error)
        self.transmit()


def _protocol_class(lib: _Lib) -> Any:
    class _Protocol(lib.QuicConnectionProtocol):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, h3_server: H3Server, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.handler = H3ConnectionHandler(h3_server, self)
            h3_server.connections.add(self.handler)

        def datagram_received(self, data: Any, addr: Any) -> None:
            if self.handler.peer == "unknown":
                self.handler.peer = _format_peer(addr)
            super().datagram_received(data, addr)

        def datagrams_received(self, data: Any, addr: Any) -> None:
            if self.handler.peer == "unknown":
                self.handler.peer = _format_peer(addr)
            super().datagrams_received(data, addr)

        def quic_event_received(self, event: Any) -> None:
            self.handler.quic_event(event)

        def transmit(self) -> None:
            super().transmit()
            self.handler.progress()

    return _Protocol


# ---------------------------------------------------------------------------
# The listener


class H3Server:
    """A QUIC/HTTP/3 listener serving gRPC calls through ``dispatcher``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        certfile: str,
        keyfile: str,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        quic_library: QuicLibrary = "qh3",
        idle_timeout: float = 60.0,
    ) -> None:
        self.lib = _load(quic_library)
        self.dispatcher = dispatcher
        self.max_message_size = max_message_size
        self.h3_class = _stream_errors_h3(self.lib)
        self.connections: set[H3ConnectionHandler] = set()
        self.closing = False
        self.port = 0
        self._listener: Any = None
        self._closed = asyncio.Event()
        configuration = self.lib.QuicConfiguration(
            is_client=False,
            alpn_protocols=self.lib.H3_ALPN,
            idle_timeout=idle_timeout,
            # HTTP/3 SETTINGS announce H3_DATAGRAM; strict peers (qh3) then need the
            # transport parameter too (aioquic's http3_server example does the same).
            max_datagram_frame_size=65536,
        )
        configuration.load_cert_chain(certfile, keyfile)
        self._configuration = configuration

    @property
    def calls_in_flight(self) -> int:
        """Calls whose state is held, over all connections (tests watch this)."""
        return sum(len(c.calls) for c in self.connections)

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP ``host:port``; ``UdpPortTaken`` if the port is in use."""
        bare = host.strip("[]")
        protocol_class = _protocol_class(self.lib)

        def create_protocol(*args: Any, **kwargs: Any) -> Any:
            return protocol_class(*args, h3_server=self, **kwargs)

        try:
            self._listener = await self.lib.serve(
                bare, port, configuration=self._configuration, create_protocol=create_protocol
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UdpPortTaken(
                    errno.EADDRINUSE,
                    f"UDP port {port} on {host} is in use (TCP {port} was free): "
                    "HTTP/3 listens on the same port number as HTTP/2",
                ) from error
            raise
        sockname = self._listener._transport.get_extra_info("sockname")
        self.port = int(sockname[1])

    def connection_closed(self, conn: H3ConnectionHandler) -> None:
        self.connections.discard(conn)

    def goaway(self) -> None:
        """GOAWAY on every connection; new requests get H3_REQUEST_REJECTED."""
        for conn in list(self.connections):
            conn.goaway()

    async def stop(self, grace: float) -> None:
        """GOAWAY, let calls finish for ``grace`` seconds, cancel the rest, close."""
        self.goaway()
        self.closing = True
        waits = [asyncio.ensure_future(c.wait_idle()) for c in list(self.connections)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace if grace > 0 else 0.001)
            for task in pending:
                task.cancel()
        for conn in list(self.connections):
            for call in list(conn.calls.values()):
                call.server_cancel()
        tasks = [call.task for conn in list(self.connections) for call in conn.calls.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        # The last responses were just queued: give them a moment on the wire
        # before CONNECTION_CLOSE, which makes a peer drop what is unprocessed.
        await asyncio.sleep(CLOSE_LINGER)
        for conn in list(self.connections):
            conn.close()
        # Let the CONNECTION_CLOSE frames leave before the socket closes.
        await asyncio.sleep(0)
        if self._listener is not None:
            self._listener.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
