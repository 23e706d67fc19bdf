"""gRPC over HTTP/3 (QUIC) for the client: a channel that behaves like grpc.aio's.

``H3Channel`` is what ``AsyncClient`` uses per endpoint when
``transport="h3"``; ``AutoChannel`` when ``transport="auto"``. Both offer
grpc.aio's multi-callables (``unary_unary`` ... ``stream_stream``) whose call
objects behave like grpc.aio's as far as the runtime (and most users) use
them: ``await call``, ``await call.initial_metadata()`` /
``trailing_metadata()`` / ``code()`` / ``details()``, ``await call.read()``
returning ``grpc.aio.EOF``, ``async for``, ``call.cancel()``; failures raise
``grpc.aio.AioRpcError``. So locality, failover, retries (commit detection by
response headers), deadlines and replay in ``client`` work unchanged.

The wire format (framing, headers, grpc-timeout, grpc-message, ``-bin``
metadata, status mapping) is ``wire``'s; this module does the I/O.

Behaviour (gRFC G2, as grpc-dotnet implements it):

* **Connection**: one QUIC connection per channel, opened lazily by the first
  call, shared by all calls (one request stream each), reopened lazily by the
  next call after it closed, idled out or the server sent GOAWAY. A failed
  handshake, an unreachable address or a connection lost under a call is
  UNAVAILABLE (never committed unless headers had arrived), so the runtime
  fails over. See ``h3_client_connection`` for why the UDP socket is connected.
* **Deadlines**: ``timeout`` is sent as ``grpc-timeout`` and enforced locally;
  at expiry the stream is reset (RESET_STREAM + STOP_SENDING,
  H3_REQUEST_CANCELLED) and the call fails with DEADLINE_EXCEEDED.
  ``cancel()`` does the same with CANCELLED.
* **Request streams** are sent message by message as DATA frames; before each
  message the sender waits while more than ``HIGH_WATER`` bytes of the stream
  are still queued (QUIC flow/congestion control), so a fast producer never
  buffers without bound.
* **Responses**: ``wire.MessageDecoder`` across DATA frames;
  ``max_receive_message_length`` (grpc's channel option, default 4 MiB) is
  checked on the length prefix: RESOURCE_EXHAUSTED, stream reset. Trailers or
  trailers-only give the status; a stream that ends without ``grpc-status``
  maps its HTTP status; a reset by the server maps its HTTP/3 error code.
* **TLS** is mandatory: the server certificate is verified against
  ``ca_file`` (else the system CAs) and the address dialled (IP SANs work);
  ``insecure_skip_verify=True`` turns verification off and logs a warning once.

Not supported (grpc.aio has them): ``write()``/``done_writing()`` on calls
without a request iterator, compression of requests, interceptors,
``wait_for_connection``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import grpc
import grpc.aio
from qh3.h3 import events as h3_events

from protoc_gen_localfirst import __version__
from protoc_gen_localfirst.runtime import wire
from protoc_gen_localfirst.runtime.http3.connection import (
    ConnectFailed,
    H3ClientProtocol,
    client_configuration,
    open_connection,
)

NOT_SENT = "HTTP/3 request not sent"
"""Prefix of the details of failures before a request left this client: the
runtime may retry those even for non-idempotent rpcs (see retry.provably_not_processed)."""

_H3_ERROR_NAMES = {int(error): f"H3_{error.name}" for error in wire.H3Error}
log = logging.getLogger(__name__)

Transport = Literal["h2", "h3", "auto"]
"""``h2``: grpc.aio over TCP; ``h3``: HTTP/3 only; ``auto``: HTTP/3, else HTTP/2."""

USER_AGENT = f"grpc-python-localfirst-h3/{__version__}"


@dataclass(frozen=True)
class H3Options:
    """Tuning of the HTTP/3 transport (``AsyncClient(h3_options=...)``)."""

    connect_timeout: float = 1.0
    """Longest wait for a QUIC handshake; a call's own deadline may cut it shorter."""
    idle_timeout: float = 30.0
    """QUIC idle timeout; an idle connection closes and the next call reopens it."""
    fallback_ttl: float = 60.0
    """``auto``: after HTTP/3 failed for an endpoint, how long to use HTTP/2
    for it before trying HTTP/3 again (a server that enables HTTP/3 later is
    picked up within this time)."""


_warned_insecure = False


def _warn_insecure_once() -> None:
    global _warned_insecure
    if not _warned_insecure:
        _warned_insecure = True
        log.warning(
            "HTTP/3: insecure_skip_verify=True: server certificates are NOT verified; "
            "anyone on the path can impersonate the server. Use ca_file in production."
        )


def _option(options: Iterable[tuple[str, Any]], key: str, default: int | None) -> int | None:
    value = default
    for name, given in options:
        if name == key:
            value = None if given is None or int(given) < 0 else int(given)
    return value


class _MultiCallableChannel(grpc.aio.Channel):
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


class H3Channel(_MultiCallableChannel):
    """A channel to one ``host:port`` over HTTP/3; see the module docstring.

    ``channel_options`` are read for ``grpc.max_receive_message_length``
    (default 4 MiB, -1 unlimited) and ``grpc.max_send_message_length``
    (default unlimited), so the limits match the HTTP/2 channels.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
        options: H3Options | None = None,
        channel_options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.options = options or H3Options()
        self.authority = f"[{host}]:{port}" if _is_ipv6(host) else f"{host}:{port}"
        channel_options = tuple(channel_options)
        self.max_receive_message_length = _option(
            channel_options, "grpc.max_receive_message_length", wire.DEFAULT_MAX_MESSAGE_SIZE
        )
        self.max_send_message_length = _option(
            channel_options, "grpc.max_send_message_length", None
        )
        if insecure_skip_verify:
            _warn_insecure_once()
        self._ca_file = ca_file
        self._insecure_skip_verify = insecure_skip_verify
        self._connection: H3ClientProtocol | None = None
        self._connecting: asyncio.Task[H3ClientProtocol] | None = None
        self._last_failure: str | None = None
        self._calls: set[H3Call] = set()
        self._closed = False

    # connection lifecycle

    async def connect(self, timeout: float | None = None) -> H3ClientProtocol:
        """The open connection, or a new one (one handshake at a time); ``ConnectFailed``."""
        if self._closed:
            raise ConnectFailed("the channel was closed")
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)
        limit = self.options.connect_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(self._connecting), limit)
        except TimeoutError:
            raise ConnectFailed(
                f"no QUIC handshake with {self.authority} within {limit:g}s"
            ) from None

    async def _open(self) -> H3ClientProtocol:
        try:
            connection = await open_connection(
                self.host,
                self.port,
                client_configuration(
                    self.host,
                    ca_file=self._ca_file,
                    insecure_skip_verify=self._insecure_skip_verify,
                    idle_timeout=self.options.idle_timeout,
                ),
                self.options.connect_timeout,
            )
        except ConnectFailed as error:
            self._last_failure = str(error)
            raise
        except OSError as error:
            self._last_failure = str(error)
            raise ConnectFailed(f"{self.authority}: {error}") from error
        finally:
            self._connecting = None
        if self._closed:
            connection.shutdown()
            raise ConnectFailed("the channel was closed")
        self._last_failure = None
        previous, self._connection = self._connection, connection
        connection.on_end = self._connection_ended
        if previous is not None and previous.active_streams == 0:
            previous.shutdown()  # GOAWAY'd or idle: nothing left on it
        return connection

    def _connection_ended(self, connection: H3ClientProtocol) -> None:
        if self._connection is connection:
            self._connection = None
            self._last_failure = connection.ended

    def _multicallable(
        self, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> H3MultiCallable:
        return H3MultiCallable(self, method, serializer, deserializer, kind)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        if self._connection is not None and self._connection.usable:
            return grpc.ChannelConnectivity.READY
        if self._connecting is not None:
            return grpc.ChannelConnectivity.CONNECTING
        if try_to_connect:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)
            return grpc.ChannelConnectivity.CONNECTING
        if self._last_failure is not None:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        while True:
            try:
                await self.connect()
                return
            except ConnectFailed:
                await asyncio.sleep(0.2)

    async def close(self, grace: float | None = None) -> None:
        """Like grpc.aio: with ``grace``, calls get that long to finish; the rest are cancelled."""
        if self._closed:
            return
        self._closed = True
        if grace and self._calls:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_done()) for c in self._calls], timeout=grace
            )
        for call in list(self._calls):
            call.abort(grpc.StatusCode.CANCELLED, "Channel closed!")
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.shutdown()
            self._connection = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"H3Channel({self.authority}, {self.get_state().name})"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class H3MultiCallable:
    """grpc.aio's multi-callable: ``multicallable(request_or_iterator, timeout=, metadata=)``."""

    def __init__(
        self,
        channel: H3Channel,
        path: str,
        serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None,
        kind: str,
    ) -> None:
        self._channel = channel
        self._path = path
        self._serializer = serializer or _identity
        self._deserializer = deserializer or _identity
        self._client_streaming = kind.startswith("stream_")
        self._server_streaming = kind.endswith("_stream")

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: wire.MetadataInput | None = None,
        **_: Any,
    ) -> H3Call:
        return H3Call(
            self._channel,
            self._path,
            request,
            self._serializer,
            self._deserializer,
            timeout=timeout,
            metadata=tuple(metadata or ()),
            client_streaming=self._client_streaming,
            server_streaming=self._server_streaming,
        )


def _identity(value: Any) -> Any:
    return value


_END = object()


class H3Call:
    """One call on an ``H3Channel``; the grpc.aio call interface (see the module docstring).

    Life: a task gets the connection and sends the request(s); HTTP/3 events
    arrive through ``h3_event``; the call ends exactly once (``_finish``) with
    the status from trailers, or a local one (deadline, cancel, connection
    lost, message too large).
    """

    def __init__(
        self,
        channel: H3Channel,
        path: str,
        request: Any,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
        *,
        timeout: float | None,
        metadata: wire.Metadata,
        client_streaming: bool,
        server_streaming: bool,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._channel = channel
        self._path = path
        self._serializer = serializer
        self._deserializer = deserializer
        self._client_streaming = client_streaming
        self._server_streaming = server_streaming
        self._http_status = 0
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._metadata = metadata
        self._initial: asyncio.Future[grpc.aio.Metadata] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._messages: asyncio.Queue[Any] = asyncio.Queue()
        self._decoder = wire.MessageDecoder(channel.max_receive_message_length)
        self._response: Any = _END
        self._code = grpc.StatusCode.UNKNOWN
        self._details = ""
        self._trailing = grpc.aio.Metadata()
        self._locally_cancelled = False
        self._connection: H3ClientProtocol | None = None
        self._stream_id: int | None = None
        self._headers_seen = False
        self._timer = (
            None if timeout is None else self._loop.call_later(max(timeout, 0.0), self._expire)
        )
        channel._calls.add(self)
        self._task = self._loop.create_task(self._run(request))

    # the grpc.aio call interface

    def __await__(self) -> Generator[Any, None, Any]:
        yield from self._wait_status().__await__()
        if self._response is _END:
            raise self._error(grpc.StatusCode.INTERNAL, "response had no message")
        return self._response

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message

    async def read(self) -> Any:
        """The next response message, ``grpc.aio.EOF`` after the last; raises on a failed call."""
        if self._messages.empty() and self._done.done():
            await self._wait_status()
            return grpc.aio.EOF
        message = await self._messages.get()
        if message is _END:
            self._messages.put_nowait(_END)
            await self._wait_status()
            return grpc.aio.EOF
        return message

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await asyncio.shield(self._initial)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await asyncio.shield(self._done)
        return self._trailing

    async def code(self) -> grpc.StatusCode:
        await asyncio.shield(self._done)
        return self._code

    async def details(self) -> str:
        await asyncio.shield(self._done)
        return self._details

    async def wait_done(self) -> None:
        await asyncio.shield(self._done)

    def cancel(self) -> bool:
        if self._done.done():
            return False
        self._locally_cancelled = True
        self.abort(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return True

    def cancelled(self) -> bool:
        return self._code == grpc.StatusCode.CANCELLED and self._done.done()

    def done(self) -> bool:
        return self._done.done()

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def add_done_callback(self, callback: Callable[[H3Call], None]) -> None:
        self._done.add_done_callback(lambda _: callback(self))

    # status

    async def _wait_status(self) -> None:
        await asyncio.shield(self._done)
        if self._locally_cancelled:
            raise asyncio.CancelledError()
        if self._code != grpc.StatusCode.OK:
            raise self._error(self._code, self._details)

    def _error(self, code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        initial = self._initial.result() if self._initial.done() else grpc.aio.Metadata()
        return grpc.aio.AioRpcError(code, initial, self._trailing, details=details)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """End the call locally: reset its stream and finish with ``code``."""
        if self._done.done():
            return
        if self._connection is not None and self._stream_id is not None:
            self._connection.cancel_stream(self._stream_id)
        self._finish(code, details)

    def _expire(self) -> None:
        self.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _finish(self, code: grpc.StatusCode, details: str, trailing: wire.Metadata = ()) -> None:
        if self._done.done():
            return
        self._code, self._details = code, details
        self._trailing = grpc.aio.Metadata(*trailing)
        if not self._initial.done():
            self._initial.set_result(grpc.aio.Metadata())
        if self._timer is not None:
            self._timer.cancel()
        if self._connection is not None and self._stream_id is not None:
            self._connection.finish_stream(self._stream_id)
        if not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
        self._messages.put_nowait(_END)
        self._done.set_result(None)
        self._channel._calls.discard(self)

    # sending

    async def _run(self, request: Any) -> None:
        try:
            await self._start()
            if self._connection is None or self._stream_id is None:
                return
            await self._send(request)
        except asyncio.CancelledError:
            pass
        except Exception as error:  # becomes the call's status
            if not self._done.done():
                log.debug("HTTP/3 call %s failed while sending", self._path, exc_info=True)
                self.abort(
                    grpc.StatusCode.UNKNOWN, f"Exception serializing or sending request: {error!r}"
                )

    async def _start(self) -> None:
        remaining = self.time_remaining()
        limit = self._channel.options.connect_timeout
        if remaining is not None:
            limit = min(limit, remaining)
        try:
            connection = await self._channel.connect(limit)
        except ConnectFailed as error:
            if self.time_remaining() == 0.0:
                self._finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            else:
                self._finish(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT}: {error}")
            return
        if self._done.done():
            return
        await connection.wait_stream_credit()
        if self._done.done():
            return
        remaining = self.time_remaining()
        headers = wire.build_request_headers(
            self._path,
            authority=self._channel.authority,
            timeout=remaining,
            metadata=self._metadata,
            user_agent=USER_AGENT,
        )
        try:
            self._stream_id = connection.start_request(self, headers)
        except ConnectionError as error:
            self._finish(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT}: {error}")
            return
        self._connection = connection

    def _frame(self, request: Any) -> bytes:
        data = self._serializer(request)
        limit = self._channel.max_send_message_length
        if limit is not None and len(data) > limit:
            raise _TooLarge(f"Sent message larger than max ({len(data)} vs. {limit})")
        return wire.encode_message(data)

    async def _send(self, request: Any) -> None:
        connection, stream_id = self._connection, self._stream_id
        assert connection is not None and stream_id is not None
        try:
            if not self._client_streaming:
                connection.send_data(stream_id, self._frame(request), end_stream=True)
                return
            if isinstance(request, AsyncIterable):
                async for item in request:
                    await self._send_one(connection, stream_id, item)
            else:
                for item in request:
                    await self._send_one(connection, stream_id, item)
        except _TooLarge as error:
            self.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            return
        if not self._done.done():
            connection.send_data(stream_id, b"", end_stream=True)

    async def _send_one(self, connection: H3ClientProtocol, stream_id: int, item: Any) -> None:
        if self._done.done():
            raise asyncio.CancelledError()
        await connection.wait_writable(stream_id)
        if self._done.done():
            raise asyncio.CancelledError()
        connection.send_data(stream_id, self._frame(item), end_stream=False)

    # receiving (StreamListener)

    def h3_event(self, event: h3_events.H3Event) -> None:
        if self._done.done():
            return
        try:
            if isinstance(event, h3_events.HeadersReceived):
                self._on_headers(event.headers, event.stream_ended)
            elif isinstance(event, h3_events.DataReceived):
                self._on_data(event.data, event.stream_ended)
            elif isinstance(event, h3_events.StreamReset):
                code = wire.status_from_h3_error(event.error_code)
                name = _H3_ERROR_NAMES.get(event.error_code, f"0x{event.error_code:x}")
                self._finish(code, f"stream reset by the server (HTTP/3 error {name})")
        except wire.WireError as error:
            self.abort(error.status, error.message)

    def connection_lost(self, reason: str) -> None:
        self._finish(grpc.StatusCode.UNAVAILABLE, f"HTTP/3 connection lost: {reason}")

    def _on_headers(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        if not self._headers_seen:
            self._headers_seen = True
            head = wire.parse_response_headers(headers)
            self._http_status = head.http_status
            if head.status is not None:  # trailers-only (or not a gRPC answer)
                status = head.status
                self._finish(status.code, status.message, status.metadata)
                return
            self._initial.set_result(grpc.aio.Metadata(*head.metadata))
            if ended:
                self._end_without_trailers()
            return
        self._decoder.end()
        status = wire.parse_trailers(headers)
        self._finish(status.code, status.message, status.metadata)

    def _on_data(self, data: bytes, ended: bool) -> None:
        if not self._headers_seen:
            raise wire.WireError("DATA before response headers")
        for raw in self._decoder.feed(data):
            try:
                message = self._deserializer(raw)
            except Exception as error:  # a bad message fails the call
                raise wire.WireError(f"Exception deserializing response! {error!r}") from error
            if self._server_streaming:
                self._messages.put_nowait(message)
            elif self._response is _END:
                self._response = message
            else:
                raise wire.WireError("unary response with more than one message")
        if ended:
            self._end_without_trailers()

    def _end_without_trailers(self) -> None:
        self._decoder.end()
        code = wire.status_from_http(self._http_status)
        if self._http_status == 200:
            code = grpc.StatusCode.UNKNOWN
        self._finish(code, f"stream ended without grpc-status (HTTP {self._http_status})")


class _TooLarge(Exception):
    pass


# ---------------------------------------------------------------------------
# transport="auto"


class TransportMemory:
    """Per endpoint: until when HTTP/3 is known not to work (shared by a client's channels)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._h2_until: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def use_h2(self, key: str) -> bool:
        until = self._h2_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._h2_until[key]
            return False
        return True

    def h3_failed(self, key: str, ttl: float, reason: str) -> None:
        self._h2_until[key] = self._clock() + ttl
        self.reasons[key] = reason

    def h3_works(self, key: str) -> None:
        self._h2_until.pop(key, None)
        self.reasons.pop(key, None)


class AutoChannel(_MultiCallableChannel):
    """``transport="auto"``: HTTP/3 when its handshake works, else HTTP/2, remembered.

    Each call first asks ``memory`` whether HTTP/3 failed for this endpoint
    recently (then it goes straight to HTTP/2). Otherwise it waits for the
    HTTP/3 connection (at most ``H3Options.connect_timeout``); if the
    handshake fails (UDP blocked or not served, refused, TLS error) the
    endpoint is marked HTTP/2-only for ``fallback_ttl`` seconds, the reason is
    logged once, and the call goes over HTTP/2. A working HTTP/3 connection
    that is later lost is not a reason to fall back: its calls fail over like
    any other UNAVAILABLE, and the next call tries HTTP/3 again.
    """

    def __init__(
        self,
        key: str,
        h3: H3Channel,
        make_h2: Callable[[], grpc.aio.Channel],
        memory: TransportMemory,
    ) -> None:
        self.key = key
        self.h3 = h3
        self._make_h2 = make_h2
        self._h2: grpc.aio.Channel | None = None
        self.memory = memory

    def h2(self) -> grpc.aio.Channel:
        if self._h2 is None:
            self._h2 = self._make_h2()
        return self._h2

    async def choose(self) -> grpc.aio.Channel:
        """The channel the next call should use (see the class docstring)."""
        if self.memory.use_h2(self.key):
            return self.h2()
        try:
            await self.h3.connect()
        except ConnectFailed as error:
            reason = str(error)
            if self.memory.reasons.get(self.key) != reason:
                log.warning(
                    "HTTP/3 to %s failed (%s); using HTTP/2 for %gs",
                    self.key,
                    reason,
                    self.h3.options.fallback_ttl,
                )
            self.memory.h3_failed(self.key, self.h3.options.fallback_ttl, reason)
            return self.h2()
        self.memory.h3_works(self.key)
        return self.h3

    def _multicallable(
        self, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> _AutoMultiCallable:
        return _AutoMultiCallable(self, kind, method, serializer, deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self.memory.use_h2(self.key) and self._h2 is not None:
            return self._h2.get_state(try_to_connect)
        return self.h3.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        await (await self.choose()).channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self.h3.close(grace)
        if self._h2 is not None:
            await self._h2.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _AutoMultiCallable:
    def __init__(
        self, channel: AutoChannel, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: wire.MetadataInput | None = None,
        **_: Any,
    ) -> AutoCall:
        return AutoCall(self, request, timeout, metadata)

    async def open(self, request: Any, timeout: float | None, metadata: Any) -> Any:
        started = time.monotonic()
        channel = await self._channel.choose()
        if timeout is not None:
            timeout = max(timeout - (time.monotonic() - started), 0.0)
        multicallable = getattr(channel, self._kind)(
            self._method,
            request_serializer=self._serializer,
            response_deserializer=self._deserializer,
        )
        return multicallable(request, timeout=timeout, metadata=metadata)


class AutoCall:
    """A grpc.aio-like call that first picks HTTP/3 or HTTP/2, then forwards to that call."""

    def __init__(
        self, multicallable: _AutoMultiCallable, request: Any, timeout: float | None, metadata: Any
    ) -> None:
        self._inner: asyncio.Task[Any] = asyncio.ensure_future(
            multicallable.open(request, timeout, metadata)
        )
        self._cancelled = False

    async def _call(self) -> Any:
        return await asyncio.shield(self._inner)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._await().__await__()

    async def _await(self) -> Any:
        return await (await self._call())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._call()
        async for message in call:
            yield message

    async def read(self) -> Any:
        return await (await self._call()).read()

    async def initial_metadata(self) -> Any:
        return await (await self._call()).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._call()).trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await (await self._call()).code()
        return code

    async def details(self) -> str:
        details: str = await (await self._call()).details()
        return details

    def cancel(self) -> bool:
        if self._inner.done() and not self._inner.cancelled() and self._inner.exception() is None:
            cancelled: bool = self._inner.result().cancel()
            return cancelled
        if self._cancelled:
            return False
        self._cancelled = True
        self._inner.cancel()
        return True

    def done(self) -> bool:
        if self._inner.done() and not self._inner.cancelled() and self._inner.exception() is None:
            done: bool = self._inner.result().done()
            return done
        return self._inner.done()
