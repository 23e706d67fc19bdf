"""One gRPC call on one HTTP/3 request stream, server side: ``H3ServerCall``.

It holds the stream's state (message decoder, queued request messages,
handler task, deadline timer), drives the ``grpc.RpcMethodHandler`` the
dispatcher found with an ``H3ServicerContext``, and queues the response. It
is in its connection's ``calls`` from the request HEADERS until the final
status is queued (or the stream was reset); see ``server`` for the behaviour.

A call cancelled before its task first ran (the request HEADERS and a reset,
or bad DATA, arrived in one batch of datagrams) is not cancelled as a task
(a task cancelled before its first step never runs its body, so the call
would neither answer nor leave ``calls``): the task starts, sees the reason
and ends the call as a cancel at its first await would.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.http3.budget import BufferBudget
from protoc_gen_localfirst.runtime.http3.context import H3ServicerContext
from protoc_gen_localfirst.runtime.http3.dispatch import Dispatcher
from protoc_gen_localfirst.runtime.wire import (
    DEADLINE_EXCEEDED,
    METHOD_NOT_FOUND,
    SHUTTING_DOWN,
    H3Error,
    MessageDecoder,
    Metadata,
    RequestHead,
    WireError,
    build_response_headers,
    build_trailers,
    build_trailers_only,
    check_send_size,
    encode_message,
)

__all__ = ["H3ServerCall", "StreamOwner"]

_LOG = logging.getLogger("protoc_gen_localfirst.h3_server")


class StreamOwner(Protocol):
    """What a call needs from its connection (``H3ConnectionHandler``)."""

    peer: str
    h3: Any
    quic: Any

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def budget(self) -> BufferBudget[H3ServerCall]: ...
    def transmit(self) -> None: ...
    def transmit_soon(self) -> None: ...
    async def wait_writable(self, call: H3ServerCall) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def forget(self, call: H3ServerCall) -> None: ...


class _Cancel:
    DEADLINE = "deadline"
    CLIENT = "client"
    SERVER = "server"
    WIRE = "wire"


class H3ServerCall:
    """One gRPC call on one HTTP/3 request stream (see the module docstring)."""

    def __init__(
        self,
        conn: StreamOwner,
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
        self.max_message_size = conn.max_message_size
        self._decoder = MessageDecoder(self.max_message_size, head.encoding, side="SERVER")
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
        self._context: H3ServicerContext | None = None
        self._started = False
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
        check_send_size(len(data), self.max_message_size, side="SERVER")
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
                self._account()
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
        for victim in self._account():
            victim.shed()

    def shed(self) -> None:
        """The server's buffer budget is exhausted and this call holds the most:
        RESOURCE_EXHAUSTED, the rest of the request refused (STOP_SENDING), its
        buffered bytes dropped."""
        held = self._decoder.buffered + self._queued_bytes
        self._messages.clear()
        self._queued_bytes = 0
        self._decoder = MessageDecoder(self.max_message_size, self.head.encoding, side="SERVER")
        self._fail(
            WireError(
                f"server overloaded: this call held {held} request bytes its handler had "
                f"not read, the most of any call (max_buffered_bytes={self.conn.budget.limit})",
                status=grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        )

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

    def _account(self) -> list[H3ServerCall]:
        """Tell the server-wide budget what this call holds; the calls to shed."""
        return self.conn.budget.hold(self, self._decoder.buffered + self._queued_bytes)

    def _fail(self, error: WireError) -> None:
        self.conn.budget.drop(self)
        self._wire_error = error
        self.request_done = True
        self._readable.set()
        self._cancel(_Cancel.WIRE)

    def _cancel(self, reason: str) -> None:
        if self.finished or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        if self._started:  # else the task sees the reason when it starts (module docstring)
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
        self._started = True
        try:
            code, details, final = await self._handle()
            if self._cancel_reason == _Cancel.CLIENT:
                self._reset(H3Error.REQUEST_CANCELLED)
                return
            code, details, final = self._status_after_cancel(code, details, final)
            context = self._context
            self._finish(code, details, context.trailing_pairs if context else (), final)
        except asyncio.CancelledError:
            self._reset(H3Error.REQUEST_CANCELLED)
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.finished = True
            self.conn.budget.drop(self)
            self.conn.forget(self)
            if self._context is not None:
                self._context.run_done_callbacks()

    async def _handle(self) -> tuple[grpc.StatusCode, str, bytes | None]:
        """Find and run the handler: the status it ended with, and a unary response."""
        try:
            if self._cancel_reason is not None:  # cancelled before this task first ran
                raise asyncio.CancelledError()
            handler = await self.conn.dispatcher.find(self.head.path, self.metadata)
            if handler is None:
                return grpc.StatusCode.UNIMPLEMENTED, METHOD_NOT_FOUND, None
            context = self._context = H3ServicerContext(
                self, handler.request_deserializer, handler.response_serializer
            )
            final = await self._drive(handler, context)
            code, details = grpc.StatusCode.OK, ""
            if context.final_code is not None:
                code, details = context.final_code, context.details()
            return code, details, final if code == grpc.StatusCode.OK else None
        except grpc.aio.AbortError:
            assert self._context is not None
            code = self._context.final_code or grpc.StatusCode.UNKNOWN
            return code, self._context.details(), None
        except WireError as error:
            return error.status, error.message, None
        except asyncio.CancelledError:
            if self._cancel_reason is None:
                raise
            return grpc.StatusCode.OK, "", None  # the cancel reason decides the status
        except Exception as error:  # noqa: BLE001 - a handler bug: UNKNOWN, as grpc.aio answers
            _LOG.exception("error in handler for %s", self.head.path)
            return grpc.StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}", None

    def _status_after_cancel(
        self, code: grpc.StatusCode, details: str, final: bytes | None
    ) -> tuple[grpc.StatusCode, str, bytes | None]:
        """The status a deadline, a server stop or bad request framing imposes."""
        reason = self._cancel_reason
        if reason == _Cancel.DEADLINE:
            return grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED, None
        if reason == _Cancel.SERVER:
            return grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN, None
        if reason == _Cancel.WIRE and self._wire_error is not None:
            return self._wire_error.status, self._wire_error.message, None
        return code, details, final

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
        check_send_size(len(data), self.max_message_size, side="SERVER")
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
        self.conn.transmit_soon()

    def _reset(self, error_code: int) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn.reset_stream(self.stream_id, error_code)
