"""The asyncio client: grpc.aio (HTTP/2) or our HTTP/3 channels, driven by ``CallState``.

Only I/O lives here: opening attempts, awaiting answers, sleeping and
cancelling. What to do next is always the call state machine's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar, Unpack

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.client.actions import Attempt, AwaitEndpoints, GiveUp, Wait
from protoc_gen_localfirst.runtime.client.call import CallState
from protoc_gen_localfirst.runtime.client.channels import Lease
from protoc_gen_localfirst.runtime.client.core import (
    ENDPOINT_POLL,
    CallOptions,
    ClientCore,
    Requests,
)
from protoc_gen_localfirst.runtime.client.replay import AsyncRequestReplay, SingleRequest
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import MethodInfo, RequestT, ResponseT

if TYPE_CHECKING:
    from protoc_gen_localfirst.runtime.http3.client import TransportMemory

_MessageT = TypeVar("_MessageT")
RequestStream: TypeAlias = AsyncIterable[_MessageT] | Iterable[_MessageT]
"""What an asyncio client-streaming method takes: an async or a plain iterable."""

_FAILED: Any = object()
"""An attempt's result when it failed (the state machine has the details)."""


class AsyncClient(ClientCore[grpc.aio.Channel]):
    """asyncio client core (grpc.aio): local-first endpoint order, failover, retries.

    ``interceptors``: grpc.aio client interceptors (``grpc.aio.UnaryUnaryClientInterceptor``
    and the other three), given to every HTTP/2 channel; on HTTP/3 the runtime
    runs the same chain around its own calls (``http3.intercept``). They run per
    attempt: a retried call goes through them once per attempt.
    """

    _interceptor_types: tuple[type, ...] = (grpc.aio.ClientInterceptor,)
    _interceptor_accepted = (
        "grpc.aio client interceptors, e.g. grpc.aio.UnaryUnaryClientInterceptor"
    )

    _calls_in_threads = False  # every call runs on the event loop: no locks on the call path

    _fallbacks: TransportMemory | None = None
    """``transport="auto"``: endpoints that fell back to HTTP/2, shared by their channels."""
    _closing: set[asyncio.Future[None]] | None = None

    def _new_channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        if self.transport == "h2":
            return self._h2_channel(endpoint)
        # Imported here: QUIC is loaded only by clients that use HTTP/3.
        from protoc_gen_localfirst.runtime.http3.client import (
            AutoChannel,
            H3Channel,
            TransportMemory,
        )
        from protoc_gen_localfirst.runtime.http3.options import H3Options

        h3 = H3Channel(
            endpoint.host,
            endpoint.port,
            tls=self.tls,
            options=self._h3_options or H3Options(),
            channel_options=self._channel_options,
            interceptors=self._interceptors,
        )
        if self.transport == "h3":
            return h3
        if self._fallbacks is None:
            self._fallbacks = TransportMemory()
        return AutoChannel(
            endpoint.address, h3, lambda: self._h2_channel(endpoint), self._fallbacks
        )

    def _h2_channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        target = endpoint.channel_target
        interceptors = list(self._interceptors) or None
        if self._credentials is None:
            return grpc.aio.insecure_channel(
                target, options=self._channel_options, interceptors=interceptors
            )
        return grpc.aio.secure_channel(
            target, self._credentials, options=self._channel_options, interceptors=interceptors
        )

    def _close_channels(self, channels: list[grpc.aio.Channel]) -> None:
        # Called on the event loop (from a call path): closing is a coroutine.
        if self._closing is None:
            self._closing = set()
        for channel in channels:
            closing = asyncio.ensure_future(channel.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop discovery and close every channel; calls in flight are cancelled."""
        channels = self._shutdown_discovery()
        await asyncio.gather(*(channel.close() for channel in channels), *(self._closing or ()))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _begin(self, method: MethodInfo[Any, Any], options: CallOptions) -> CallState:
        wait = self._first_resolution_wait(options)
        if wait is not None:
            await asyncio.to_thread(self._resolved.wait, wait)
        return self._new_call(method, options)

    # -- the four call shapes (what generated methods call) ---------------------------

    def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        **options: Unpack[CallOptions],
    ) -> Coroutine[Any, Any, ResponseT]:
        # The call's coroutine itself, not an ``async def`` awaiting it: one coroutine
        # frame fewer on every call (the call starts when it is awaited).
        return self._unary_response(method, options, SingleRequest(request))

    def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        **options: Unpack[CallOptions],
    ) -> Coroutine[Any, Any, ResponseT]:
        replay = AsyncRequestReplay(requests, self.retry_buffer_limit)
        return self._unary_response(method, options, replay)

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[ResponseT]:
        return self._stream_responses(method, options, SingleRequest(request))

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[ResponseT]:
        replay = AsyncRequestReplay(requests, self.retry_buffer_limit)
        return self._stream_responses(method, options, replay)

    async def _await_endpoints(self, action: AwaitEndpoints) -> Any:
        started = time.monotonic()
        while self._endpoints_unchanged(action, started):
            await asyncio.sleep(ENDPOINT_POLL)
        return _FAILED

    # -- unary responses ---------------------------------------------------------------

    async def _unary_response(
        self, method: MethodInfo[Any, Any], options: CallOptions, requests: Requests
    ) -> Any:
        """Run the call's attempts; hedged attempts run as concurrent tasks."""
        if self._has_endpoints:  # the common case, without one more coroutine
            call = self._new_call(method, options)
        else:
            call = await self._begin(method, options)
        hedges: dict[asyncio.Future[Any], Attempt] = {}
        try:
            while True:
                action = call.next_action()
                if isinstance(action, Attempt):
                    if not call.hedging:  # the common case: no task
                        response = await self._unary_attempt(call, action, requests)
                    else:
                        hedge = asyncio.ensure_future(self._unary_attempt(call, action, requests))
                        hedges[hedge] = action
                        continue
                elif isinstance(action, Wait):
                    response = await _wait(action, hedges)
                elif isinstance(action, AwaitEndpoints):
                    response = await self._await_endpoints(action)
                else:
                    action.raise_error()
                if response is not _FAILED:
                    return response
        finally:
            for task in hedges:
                task.cancel()
            if hedges:
                await asyncio.gather(*hedges, return_exceptions=True)
            call.close()

    async def _unary_attempt(self, call: CallState, attempt: Attempt, requests: Requests) -> Any:
        lease = self.channels.acquire(attempt.endpoint, call.settings.info)
        try:
            grpc_call = lease[1](
                requests.attempt(), timeout=attempt.timeout, metadata=attempt.metadata
            )
            try:
                response = await grpc_call
                # Most answers' trailers are not read (see Attempt.read_trailers).
                read = attempt.read_trailers
                trailers = await grpc_call.trailing_metadata() if read else None
            except grpc.RpcError as error:
                call.attempt_failed(attempt, error, replayable=requests.replayable)
                return _FAILED
            except asyncio.CancelledError:
                grpc_call.cancel()
                call.attempt_cancelled(attempt)
                raise
        finally:
            self.channels.release(lease)
        call.attempt_succeeded(attempt, trailers)
        return response

    # -- streamed responses --------------------------------------------------------------

    async def _stream_responses(
        self, method: MethodInfo[Any, Any], options: CallOptions, requests: Requests
    ) -> AsyncIterator[Any]:
        """Retry until the call commits (headers or a first message), then stream.

        Only the part before the commit is retried: no message is yielded twice.
        """
        call = await self._begin(method, options)
        try:
            opened = None
            while opened is None:
                action = call.next_action()
                if isinstance(action, Wait):
                    await asyncio.sleep(action.seconds or 0.0)
                elif isinstance(action, AwaitEndpoints):
                    await self._await_endpoints(action)
                elif isinstance(action, GiveUp):
                    action.raise_error()
                else:
                    opened = await self._open_stream(call, action, requests)
            attempt, lease, stream, message = opened
            try:
                while message is not grpc.aio.EOF:
                    yield message
                    message = await stream.read()
                trailers = await stream.trailing_metadata()
            except grpc.RpcError as error:
                call.stream_failed(attempt, error).raise_error()
            except BaseException:  # cancelled, or the caller stopped reading
                call.attempt_cancelled(attempt)
                raise
            finally:
                stream.cancel()
                self.channels.release(lease)
            call.attempt_succeeded(attempt, trailers)
        finally:
            call.close()

    async def _open_stream(
        self, call: CallState, attempt: Attempt, requests: Requests
    ) -> tuple[Attempt, Lease, Any, Any] | None:
        """(attempt, lease, stream, first message or EOF) once committed; None if the
        attempt failed."""
        lease = self.channels.acquire(attempt.endpoint, call.settings.info)
        stream = _open(lease[1], attempt, requests)
        try:
            call.headers_received(attempt, await stream.initial_metadata())
            first = await stream.read()
        except grpc.RpcError as error:
            stream.cancel()
            self.channels.release(lease)
            call.attempt_failed(attempt, error, replayable=requests.replayable)
            return None
        call.committed = True
        return attempt, lease, stream, first


def _open(multicallable: Any, attempt: Attempt, requests: Requests) -> Any:
    """Start the attempt's grpc.aio call (or HTTP/3 call, which behaves the same)."""
    return multicallable(requests.attempt(), timeout=attempt.timeout, metadata=attempt.metadata)


async def _wait(action: Wait, hedges: dict[asyncio.Future[Any], Attempt]) -> Any:
    """Sleep, or wait for a hedged attempt to end: its response, or ``_FAILED``."""
    if not hedges:
        await asyncio.sleep(action.seconds or 0.0)
        return _FAILED
    done, _ = await asyncio.wait(
        hedges, timeout=action.seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for task in done:
        del hedges[task]
        if task.result() is not _FAILED:
            return task.result()
    return _FAILED
