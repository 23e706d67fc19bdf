"""The blocking client: grpc channels (HTTP/2), driven by ``CallState``.

Only I/O lives here. Unary attempts are grpc futures, so hedged attempts run
concurrently without threads of our own: each future's completion is queued
and the driver takes them in the order they end.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self, Unpack

import grpc

from protoc_gen_localfirst.runtime.client.actions import Attempt, AwaitEndpoints, GiveUp, Wait
from protoc_gen_localfirst.runtime.client.call import CallState
from protoc_gen_localfirst.runtime.client.channels import Lease
from protoc_gen_localfirst.runtime.client.core import (
    ENDPOINT_POLL,
    CallOptions,
    ClientCore,
    Requests,
)
from protoc_gen_localfirst.runtime.client.replay import SingleRequest, SyncRequestReplay
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import MethodInfo, RequestT, ResponseT

_FAILED: Any = object()


class _UnaryAttempts:
    """The unary attempts of one call in flight, as grpc futures, taken as they end."""

    def __init__(self) -> None:
        self.in_flight: dict[Any, tuple[Attempt, Lease]] = {}
        """grpc futures (``grpc.Future`` and ``grpc.Call``) of attempts not yet taken,
        with their channel leases."""
        self._ended: queue.SimpleQueue[Any] | None = None
        """Made by the first ``add``: most calls never run an attempt as a future."""

    def add(self, future: Any, attempt: Attempt, lease: Lease) -> None:
        if self._ended is None:
            self._ended = queue.SimpleQueue()
        self.in_flight[future] = (attempt, lease)
        future.add_done_callback(self._ended.put)

    def next_ended(self, timeout: float | None) -> tuple[Any, tuple[Attempt, Lease]] | None:
        """The next attempt to end within ``timeout`` seconds, or None (also when none
        was added)."""
        if self._ended is None:
            return None
        try:
            future = self._ended.get(timeout=timeout)
        except queue.Empty:
            return None
        return future, self.in_flight.pop(future)


class SyncClient(ClientCore[grpc.Channel]):
    """Blocking client core (grpc channels): the same behaviour as ``AsyncClient``.

    HTTP/2 only: ``transport="h3"``/``"auto"`` raise ``ValueError`` here (the
    HTTP/3 transport is asyncio; use the asyncio client).

    ``interceptors``: grpc's (blocking) client interceptors, applied to each
    endpoint's channel with ``grpc.intercept_channel``; they run per attempt.
    """

    _transports: frozenset[str] = frozenset({"h2"})
    _interceptor_types: tuple[type, ...] = (
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    )
    _interceptor_accepted = (
        "grpc client interceptors for grpc.intercept_channel, e.g. grpc.UnaryUnaryClientInterceptor"
    )

    def _new_channel(self, endpoint: Endpoint) -> grpc.Channel:
        target = endpoint.channel_target
        if self._credentials is None:
            channel = grpc.insecure_channel(target, options=self._channel_options)
        else:
            channel = grpc.secure_channel(target, self._credentials, options=self._channel_options)
        if self._interceptors:
            return grpc.intercept_channel(channel, *self._interceptors)
        return channel

    def _close_channels(self, channels: list[grpc.Channel]) -> None:
        for channel in channels:
            channel.close()

    def close(self) -> None:
        """Stop discovery and close every channel; calls in flight are cancelled."""
        self._close_channels(self._shutdown_discovery())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _begin(self, method: MethodInfo[Any, Any], options: CallOptions) -> CallState:
        if not self._has_endpoints:  # only until discovery's first answer
            wait = self._first_resolution_wait(options)
            if wait is not None:
                self._resolved.wait(wait)
        return self._new_call(method, options)

    # -- the four call shapes (what generated methods call) ---------------------------

    def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        **options: Unpack[CallOptions],
    ) -> ResponseT:
        call = self._begin(method, options)
        response: ResponseT = self._unary_response(call, SingleRequest(request))
        return response

    def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        **options: Unpack[CallOptions],
    ) -> ResponseT:
        replay = SyncRequestReplay(requests, self.retry_buffer_limit)
        response: ResponseT = self._unary_response(self._begin(method, options), replay)
        return response

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        **options: Unpack[CallOptions],
    ) -> Iterator[ResponseT]:
        return self._stream_responses(method, options, SingleRequest(request))

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        **options: Unpack[CallOptions],
    ) -> Iterator[ResponseT]:
        replay = SyncRequestReplay(requests, self.retry_buffer_limit)
        return self._stream_responses(method, options, replay)

    def _await_endpoints(self, action: AwaitEndpoints) -> None:
        started = time.monotonic()
        while self._endpoints_unchanged(action, started):
            time.sleep(ENDPOINT_POLL)

    # -- unary responses ---------------------------------------------------------------

    def _unary_response(self, call: CallState, requests: Requests) -> Any:
        """Run the call's attempts; a sequential call waits for each attempt in turn.

        A sequential call's attempt blocks in grpc (``with_call``); hedged attempts
        run as grpc futures, which cost a thread handoff each (about as much CPU
        again as the call itself), so only hedging pays for them.
        """
        attempts = _UnaryAttempts()
        try:
            while True:
                action = call.next_action()
                if isinstance(action, Attempt) and not call.hedging:
                    response = self._unary_attempt(call, action, requests)
                    if response is not _FAILED:
                        return response
                    continue
                if isinstance(action, Attempt):
                    lease = self.channels.acquire(action.endpoint, call.settings.info)
                    attempts.add(_open(lease[1].future, action, requests), action, lease)
                    continue
                if isinstance(action, GiveUp):
                    action.raise_error()
                if isinstance(action, AwaitEndpoints):
                    self._await_endpoints(action)
                    continue
                response = self._wait(call, action, attempts, requests)
                if response is not _FAILED:
                    return response
        finally:
            for future, (attempt, lease) in attempts.in_flight.items():
                future.cancel()
                call.attempt_cancelled(attempt)
                self.channels.release(lease)
            call.close()

    def _unary_attempt(self, call: CallState, attempt: Attempt, requests: Requests) -> Any:
        """One attempt, blocking until it answers: its response, or ``_FAILED``."""
        lease = self.channels.acquire(attempt.endpoint, call.settings.info)
        try:
            response, grpc_call = _open(lease[1].with_call, attempt, requests)
        except grpc.RpcError as error:
            call.attempt_failed(attempt, error, replayable=requests.replayable)
            return _FAILED
        except BaseException:  # interrupted (KeyboardInterrupt): the attempt ends here
            call.attempt_cancelled(attempt)
            raise
        finally:
            self.channels.release(lease)
        trailers = grpc_call.trailing_metadata() if attempt.read_trailers else None
        call.attempt_succeeded(attempt, trailers)
        return response

    def _wait(
        self, call: CallState, action: Wait, attempts: _UnaryAttempts, requests: Requests
    ) -> Any:
        """Sleep, or wait for an attempt to end: its response, or ``_FAILED``."""
        if not attempts.in_flight:
            time.sleep(action.seconds or 0.0)
            return _FAILED
        ended = attempts.next_ended(action.seconds)
        if ended is None:
            return _FAILED
        future, (attempt, lease) = ended
        self.channels.release(lease)
        try:
            response = future.result()
        except grpc.RpcError as error:
            call.attempt_failed(attempt, error, replayable=requests.replayable)
            return _FAILED
        call.attempt_succeeded(attempt, future.trailing_metadata())
        return response

    # -- streamed responses --------------------------------------------------------------

    def _stream_responses(
        self, method: MethodInfo[Any, Any], options: CallOptions, requests: Requests
    ) -> Iterator[Any]:
        """Retry until the call commits (headers or a first message), then stream."""
        call = self._begin(method, options)
        try:
            opened = None
            while opened is None:
                action = call.next_action()
                if isinstance(action, Wait):
                    time.sleep(action.seconds or 0.0)
                elif isinstance(action, AwaitEndpoints):
                    self._await_endpoints(action)
                elif isinstance(action, GiveUp):
                    action.raise_error()
                else:
                    opened = self._open_stream(call, action, requests)
            attempt, lease, stream, first = opened
            try:
                if first is not _END:
                    yield first
                    yield from stream
                trailers = stream.trailing_metadata()
            except grpc.RpcError as error:
                call.stream_failed(attempt, error).raise_error()
            except BaseException:  # the caller stopped reading (GeneratorExit), or interrupted
                call.attempt_cancelled(attempt)
                raise
            finally:
                stream.cancel()
                self.channels.release(lease)
            call.attempt_succeeded(attempt, trailers)
        finally:
            call.close()

    def _open_stream(
        self, call: CallState, attempt: Attempt, requests: Requests
    ) -> tuple[Attempt, Lease, Any, Any] | None:
        """(attempt, lease, stream, first message or ``_END``) once committed; None if it
        failed."""
        lease = self.channels.acquire(attempt.endpoint, call.settings.info)
        stream = _open(lease[1], attempt, requests)
        try:
            call.headers_received(attempt, stream.initial_metadata())
            first = next(stream, _END)
        except grpc.RpcError as error:
            stream.cancel()
            self.channels.release(lease)
            call.attempt_failed(attempt, error, replayable=requests.replayable)
            return None
        call.committed = True
        return attempt, lease, stream, first


def _open(start: Any, attempt: Attempt, requests: Requests) -> Any:
    """Start the attempt with ``start`` (a multi-callable, or its ``future``)."""
    metadata = None if attempt.metadata is None else tuple(attempt.metadata)
    return start(requests.attempt(), timeout=attempt.timeout, metadata=metadata)


_END: Any = object()
"""The stream ended before its first message."""
