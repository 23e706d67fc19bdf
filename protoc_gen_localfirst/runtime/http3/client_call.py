"""One client call over HTTP/3: ``H3ClientCall``, grpc.aio's call interface.

Life: a task gets the channel's connection and sends the request(s); HTTP/3
events of its request stream arrive through ``h3_event``; the call ends
exactly once (``_finish``) with the status from trailers, or a local one
(deadline, cancel, connection lost, message too large). See ``client`` for
the behaviour (deadlines, backpressure, status mapping).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator
from typing import Any, Protocol

import grpc
import grpc.aio
from qh3.h3 import events as h3_events

from protoc_gen_localfirst import __version__
from protoc_gen_localfirst.runtime import wire
from protoc_gen_localfirst.runtime.http3.connection import ConnectFailed, H3ClientProtocol
from protoc_gen_localfirst.runtime.http3.options import H3Options
from protoc_gen_localfirst.runtime.wire.status import NOT_SENT

__all__ = ["NOT_SENT", "USER_AGENT", "CallChannel", "H3ClientCall"]

"""Prefix of the details of failures before a request left this client: the
runtime may retry those even for non-idempotent rpcs (see retry.provably_not_processed)."""

USER_AGENT = f"grpc-python-localfirst-h3/{__version__}"

_H3_ERROR_NAMES = {int(error): f"H3_{error.name}" for error in wire.H3Error}
log = logging.getLogger("protoc_gen_localfirst.runtime.http3.client")


class CallChannel(Protocol):
    """What a call needs from its channel (``H3Channel``)."""

    options: H3Options
    authority: str
    max_receive_message_length: int | None
    max_send_message_length: int | None
    calls: set[H3ClientCall]
    """Calls not yet finished; a call adds itself and removes itself when done."""

    async def connect(self, timeout: float | None = None) -> H3ClientProtocol: ...

    def ready_connection(self) -> H3ClientProtocol | None:
        """The open, usable connection, if any (no waiting)."""
        ...


_END = object()

_RECEIVE_QUEUE_MIN = 16 * 1024 * 1024


def _queue_limit(max_receive_message_length: int | None) -> int:
    """Response bytes a server-streaming call may hold unread; see ``client``."""
    largest = max_receive_message_length or _RECEIVE_QUEUE_MIN
    return max(4 * largest, _RECEIVE_QUEUE_MIN)


@functools.lru_cache(maxsize=256)
def _header_prefix(path: str, authority: str, metadata: wire.Metadata) -> tuple[wire.Header, ...]:
    """Request headers but ``grpc-timeout``: the same for every call of a method."""
    return tuple(
        wire.build_request_headers(
            path, authority=authority, metadata=metadata, user_agent=USER_AGENT
        )
    )


def _request_headers(path: str, authority: str, metadata: wire.Metadata) -> wire.Headers:
    try:
        return list(_header_prefix(path, authority, metadata))
    except TypeError:  # metadata not hashable (e.g. a bytearray value)
        return wire.build_request_headers(
            path, authority=authority, metadata=metadata, user_agent=USER_AGENT
        )


class H3ClientCall:
    """One call on an ``H3Channel``; the grpc.aio call interface (see the module docstring).

    Life: a task gets the connection and sends the request(s); HTTP/3 events
    arrive through ``h3_event``; the call ends exactly once (``_finish``) with
    the status from trailers, or a local one (deadline, cancel, connection
    lost, message too large).
    """

    def __init__(
        self,
        channel: CallChannel,
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
        # Response messages of a server-streaming call (unary calls keep theirs in
        # ``_response``): a deque and one waiter, cheaper than an asyncio.Queue.
        self._messages: collections.deque[Any] = collections.deque()
        self._readable: asyncio.Future[None] | None = None
        self._queued_bytes = 0
        self._queue_limit = _queue_limit(channel.max_receive_message_length)
        self.queued_peak = 0
        """The most response bytes this call held unread at once (tests watch it)."""
        self._decoder = wire.MessageDecoder(channel.max_receive_message_length, side="CLIENT")
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
        channel.calls.add(self)
        self._task: asyncio.Task[None] | None = None
        if not client_streaming and self._start_now(request):
            return
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
        messages = self._messages
        while not messages:
            if self._done.done():
                await self._wait_status()
                return grpc.aio.EOF
            waiter = self._readable = self._loop.create_future()
            try:
                await waiter
            finally:
                self._readable = None
        message, size = messages.popleft()
        self._queued_bytes -= size
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

    def add_done_callback(self, callback: Callable[[H3ClientCall], None]) -> None:
        self._done.add_done_callback(lambda _: callback(self))

    # status

    async def _wait_status(self) -> None:
        if not self._done.done():
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
        self.abort(grpc.StatusCode.DEADLINE_EXCEEDED, wire.DEADLINE_EXCEEDED)

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
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._done.set_result(None)
        self._wake_reader()
        self._channel.calls.discard(self)

    def _wake_reader(self) -> None:
        waiter = self._readable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # sending

    def _start_now(self, request: Any) -> bool:
        """Start the call without a task when nothing needs waiting for (the usual case).

        A single request, the channel's connection up, a stream to open and
        nobody queued for one: headers and request are queued at once (they
        leave in the connection's next transmit, as from the task). False:
        the task (``_run``) must do it.
        """
        current = getattr(self._channel, "ready_connection", None)
        connection = current() if current is not None else None
        if connection is None or not connection.can_start_now():
            return False
        try:
            frame = self._frame(request)
        except wire.MessageTooLarge as error:
            self.abort(error.status, error.message)
            return True
        except Exception as error:  # becomes the call's status, as in _run
            log.debug("HTTP/3 call %s failed while serializing", self._path, exc_info=True)
            self.abort(
                grpc.StatusCode.UNKNOWN, f"Exception serializing or sending request: {error!r}"
            )
            return True
        self._open_stream(connection)
        if self._stream_id is not None and not self._done.done():
            connection.send_data(self._stream_id, frame, end_stream=True)
        return True

    async def _run(self, request: Any) -> None:
        try:
            # A single request is serialized and checked against the send
            # limit before any connection or stream: one over the limit fails
            # the call at once, and the server never hears of it.
            frame = None if self._client_streaming else self._frame(request)
            await self._start()
            if self._connection is None or self._stream_id is None:
                return
            await self._send(request if frame is None else frame)
        except asyncio.CancelledError:
            pass
        except wire.MessageTooLarge as error:
            self.abort(error.status, error.message)
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
                self._finish(grpc.StatusCode.DEADLINE_EXCEEDED, wire.DEADLINE_EXCEEDED)
            else:
                self._finish(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT}: {error}")
            return
        if self._done.done():
            return
        await connection.wait_stream_credit()
        if self._done.done():
            connection.credit_unused()
            return
        self._open_stream(connection)

    def _open_stream(self, connection: H3ClientProtocol) -> None:
        """Send the request headers on a new stream of ``connection``."""
        try:
            headers = _request_headers(self._path, self._channel.authority, self._metadata)
        except ValueError as error:  # metadata grpc refuses too; as _run reports it
            self.abort(
                grpc.StatusCode.UNKNOWN, f"Exception serializing or sending request: {error!r}"
            )
            return
        remaining = self.time_remaining()
        if remaining is not None:
            headers.append((b"grpc-timeout", wire.encode_timeout(remaining)))
        try:
            self._stream_id = connection.start_request(self, headers)
        except ConnectionError as error:
            self._finish(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT}: {error}")
            return
        self._connection = connection

    def _frame(self, request: Any) -> bytes:
        """``request`` serialized and framed; ``MessageTooLarge`` over the send limit."""
        data = self._serializer(request)
        wire.check_send_size(len(data), self._channel.max_send_message_length, side="CLIENT")
        return wire.encode_message(data)

    async def _send(self, request: Any) -> None:
        """Send the framed single request, or the items of a request iterator."""
        connection, stream_id = self._connection, self._stream_id
        assert connection is not None and stream_id is not None
        if not self._client_streaming:
            connection.send_data(stream_id, request, end_stream=True)
            return
        if isinstance(request, AsyncIterable):
            async for item in request:
                await self._send_one(connection, stream_id, item)
        else:
            for item in request:
                await self._send_one(connection, stream_id, item)
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
                self._messages.append((message, len(raw)))
                self._queued_bytes += len(raw)
                self.queued_peak = max(self.queued_peak, self._queued_bytes)
                if self._queued_bytes > self._queue_limit:
                    raise wire.WireError(
                        f"{self._queued_bytes} bytes of response messages not read "
                        f"(limit {self._queue_limit})",
                        status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                    )
                self._wake_reader()
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
