"""Client cores that generated clients subclass: one per I/O style.

Generated clients are thin: each rpc method calls one of ``_unary_unary``,
``_unary_stream``, ``_stream_unary`` or ``_stream_stream`` with its entry of the
method table. Everything else happens here: endpoint order (``Balancer``),
attempts and retries (``CallAttempts`` + tenacity), replay of streamed
requests (``replay``), and one long-lived channel per endpoint.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

import grpc
import grpc.aio
import tenacity

from protoc_gen_localfirst.runtime.balancer import Balancer, EjectionPolicy
from protoc_gen_localfirst.runtime.endpoints import Endpoint, parse_static, parse_target
from protoc_gen_localfirst.runtime.identity import own_node, own_zone
from protoc_gen_localfirst.runtime.methods import MethodInfo, RequestT, ResponseT
from protoc_gen_localfirst.runtime.replay import (
    DEFAULT_BUFFER_LIMIT,
    AsyncRequestReplay,
    SyncRequestReplay,
)
from protoc_gen_localfirst.runtime.retry import AttemptFailed, CallAttempts, RetryPolicy

Metadata = Sequence[tuple[str, str | bytes]]
ChannelT = TypeVar("ChannelT", grpc.aio.Channel, grpc.Channel)

DEFAULT_CHANNEL_OPTIONS: dict[str, Any] = {
    # grpc's default reconnect backoff grows to 120 s; a replica that restarts
    # must get its traffic back within seconds, and ejection (Balancer) already
    # keeps calls away from it while it is down.
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    # One subchannel per channel: no backoff state shared with other channels
    # of the process to the same address.
    "grpc.use_local_subchannel_pool": 1,
}


class _ClientCore(Generic[ChannelT]):
    """What both clients share: target, identity, endpoint order, retry policy, channels.

    ``target`` is ``static:///IP:PORT@NODE[/ZONE],...``. ``node`` defaults to
    ``$NODE_NAME`` and ``zone`` to ``$LOCALFIRST_ZONE`` (or the zone the target
    gives our node). ``retry`` is the default policy of every call (a call's own
    ``retry=`` wins); ``ejection`` sets how long unreachable endpoints are
    avoided; ``retry_buffer_limit`` is how many bytes of a request stream are
    kept for replay. ``channel_options`` are grpc channel arguments, applied
    over ``DEFAULT_CHANNEL_OPTIONS``; ``credentials`` makes channels secure.
    """

    def __init__(
        self,
        target: str,
        *,
        node: str | None = None,
        zone: str | None = None,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        ejection: EjectionPolicy | None = None,
        retry_buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self.target = target
        endpoints = parse_static(parse_target(target))
        self.node = own_node(node)
        self.zone = own_zone(zone) or _zone_of_node(endpoints, self.node)
        self.retry_policy = retry or RetryPolicy()
        self.balancer = Balancer(endpoints, node=self.node, zone=self.zone, ejection=ejection)
        self.retry_buffer_limit = retry_buffer_limit
        self._credentials = credentials
        options = dict(DEFAULT_CHANNEL_OPTIONS)
        options.update(dict(channel_options))
        self._channel_options = tuple(options.items())
        self._channels: dict[str, ChannelT] = {}
        self._lock = threading.Lock()

    def endpoint_order(self) -> list[Endpoint]:
        """The order the next call would try endpoints in (for diagnostics)."""
        return self.balancer.order()

    def _start_call(
        self, method: MethodInfo[Any, Any], timeout: float | None, retry: RetryPolicy | None
    ) -> CallAttempts:
        return CallAttempts(
            method=method.path,
            balancer=self.balancer,
            policy=retry or self.retry_policy,
            timeout=timeout,
        )


def _zone_of_node(endpoints: Sequence[Endpoint], node: str | None) -> str | None:
    """A static target that places our own node in a zone tells us our zone."""
    for endpoint in endpoints:
        if node is not None and endpoint.node == node and endpoint.zone:
            return endpoint.zone
    return None


def _headers_arrived(call: object) -> bool:
    """Whether response headers arrived (the call is then committed, gRFC A6).

    grpc exposes no "trailers-only" flag; a response that carried headers has
    non-empty initial metadata when the server put anything in it, as our
    server bootstrap always does (its node name).
    """
    initial_metadata = getattr(call, "initial_metadata", None)
    return callable(initial_metadata) and bool(initial_metadata())


def _metadata_tuple(metadata: Metadata | None) -> tuple[tuple[str, str | bytes], ...] | None:
    return None if metadata is None else tuple(metadata)


def _raise_final(call: CallAttempts, failure: AttemptFailed) -> NoReturn:
    error = call.final_error(failure)
    if error is failure.error:
        raise error
    raise error from failure.error


class AsyncClient(_ClientCore[grpc.aio.Channel]):
    """asyncio client core (grpc.aio): local-first endpoint order, failover, retries."""

    def _channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint.address)
        if channel is None:
            target = endpoint.channel_target
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(target, options=self._channel_options)
            else:
                channel = grpc.aio.secure_channel(
                    target, self._credentials, options=self._channel_options
                )
            self._channels[endpoint.address] = channel
        return channel

    async def close(self) -> None:
        """Close every channel; calls in flight are cancelled."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        call = self._start_call(method, timeout, retry)
        try:
            async for attempt in tenacity.AsyncRetrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    channel = self._channel(endpoint)
                    multicallable = channel.unary_unary(
                        method.path,
                        request_serializer=method.serialize_request,
                        response_deserializer=method.deserialize_response,
                    )
                    try:
                        response: ResponseT = await multicallable(
                            request, timeout=call.attempt_timeout(), metadata=metadata
                        )
                    except grpc.RpcError as error:
                        call.committed = _headers_arrived(error)
                        raise call.failed(endpoint, error) from error
                    call.succeeded(endpoint)
                    return response
        except AttemptFailed as failure:
            _raise_final(call, failure)
        raise AssertionError("tenacity ended without an outcome")

    async def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        call = self._start_call(method, timeout, retry)
        replay = AsyncRequestReplay(requests, self.retry_buffer_limit)
        try:
            async for attempt in tenacity.AsyncRetrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    multicallable = self._channel(endpoint).stream_unary(
                        method.path,
                        request_serializer=method.serialize_request,
                        response_deserializer=method.deserialize_response,
                    )
                    try:
                        response: ResponseT = await multicallable(
                            replay.attempt(), timeout=call.attempt_timeout(), metadata=metadata
                        )
                    except grpc.RpcError as error:
                        call.committed = _headers_arrived(error) or not replay.replayable
                        raise call.failed(endpoint, error) from error
                    call.succeeded(endpoint)
                    return response
        except AttemptFailed as failure:
            _raise_final(call, failure)
        raise AssertionError("tenacity ended without an outcome")

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> AsyncIterator[ResponseT]:
        def open_stream(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.unary_stream(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(request, timeout=attempt_timeout, metadata=metadata)

        return self._stream_responses(self._start_call(method, timeout, retry), open_stream, None)

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> AsyncIterator[ResponseT]:
        replay = AsyncRequestReplay(requests, self.retry_buffer_limit)

        def open_stream(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.stream_stream(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(replay.attempt(), timeout=attempt_timeout, metadata=metadata)

        return self._stream_responses(self._start_call(method, timeout, retry), open_stream, replay)

    async def _stream_responses(
        self,
        call: CallAttempts,
        open_stream: Any,
        replay: AsyncRequestReplay[Any] | None,
    ) -> AsyncIterator[Any]:
        """Retry until the call commits (headers or a first message), then stream.

        Only the part before the commit runs inside the retry loop: no message
        is ever yielded from inside a tenacity attempt, and none twice.
        """
        stream: Any = None
        first: Any = grpc.aio.EOF
        endpoint: Endpoint | None = None
        try:
            async for attempt in tenacity.AsyncRetrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    stream = open_stream(self._channel(endpoint), call.attempt_timeout())
                    try:
                        call.committed = bool(await stream.initial_metadata())
                        first = await stream.read()
                    except grpc.RpcError as error:
                        stream.cancel()
                        if replay is not None and not replay.replayable:
                            call.committed = True
                        raise call.failed(endpoint, error) from error
        except AttemptFailed as failure:
            _raise_final(call, failure)
        assert stream is not None and endpoint is not None
        call.committed = True
        try:
            while first is not grpc.aio.EOF:
                yield first
                first = await stream.read()
        except grpc.RpcError as error:
            _raise_final(call, call.failed(endpoint, error))
        finally:
            stream.cancel()
        call.succeeded(endpoint)


class SyncClient(_ClientCore[grpc.Channel]):
    """Blocking client core (grpc channels): same behaviour as ``AsyncClient``."""

    def _channel(self, endpoint: Endpoint) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint.address)
            if channel is None:
                target = endpoint.channel_target
                if self._credentials is None:
                    channel = grpc.insecure_channel(target, options=self._channel_options)
                else:
                    channel = grpc.secure_channel(
                        target, self._credentials, options=self._channel_options
                    )
                self._channels[endpoint.address] = channel
            return channel

    def close(self) -> None:
        """Close every channel; calls in flight are cancelled."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        def invoke(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.unary_unary(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(
                request, timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        response: ResponseT = self._call_unary_response(
            self._start_call(method, timeout, retry), invoke, None
        )
        return response

    def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        replay = SyncRequestReplay(requests, self.retry_buffer_limit)

        def invoke(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.stream_unary(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        response: ResponseT = self._call_unary_response(
            self._start_call(method, timeout, retry), invoke, replay
        )
        return response

    def _call_unary_response(
        self, call: CallAttempts, invoke: Any, replay: SyncRequestReplay[Any] | None
    ) -> Any:
        try:
            for attempt in tenacity.Retrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    try:
                        response = invoke(self._channel(endpoint), call.attempt_timeout())
                    except grpc.RpcError as error:
                        call.committed = _headers_arrived(error) or (
                            replay is not None and not replay.replayable
                        )
                        raise call.failed(endpoint, error) from error
                    call.succeeded(endpoint)
                    return response
        except AttemptFailed as failure:
            _raise_final(call, failure)
        raise AssertionError("tenacity ended without an outcome")

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> Iterator[ResponseT]:
        def open_stream(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.unary_stream(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(
                request, timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        return self._stream_responses(self._start_call(method, timeout, retry), open_stream, None)

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> Iterator[ResponseT]:
        replay = SyncRequestReplay(requests, self.retry_buffer_limit)

        def open_stream(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = channel.stream_stream(
                method.path,
                request_serializer=method.serialize_request,
                response_deserializer=method.deserialize_response,
            )
            return multicallable(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        return self._stream_responses(self._start_call(method, timeout, retry), open_stream, replay)

    def _stream_responses(
        self, call: CallAttempts, open_stream: Any, replay: SyncRequestReplay[Any] | None
    ) -> Iterator[Any]:
        """Retry until the call commits (headers or a first message), then stream."""
        stream: Any = None
        first: Any = None
        finished = False
        endpoint: Endpoint | None = None
        try:
            for attempt in tenacity.Retrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    stream = open_stream(self._channel(endpoint), call.attempt_timeout())
                    try:
                        call.committed = bool(stream.initial_metadata())
                        first = next(stream)
                    except StopIteration:
                        finished = True
                    except grpc.RpcError as error:
                        stream.cancel()
                        if replay is not None and not replay.replayable:
                            call.committed = True
                        raise call.failed(endpoint, error) from error
        except AttemptFailed as failure:
            _raise_final(call, failure)
        assert stream is not None and endpoint is not None
        call.committed = True
        try:
            if not finished:
                yield first
                yield from stream
        except grpc.RpcError as error:
            _raise_final(call, call.failed(endpoint, error))
        finally:
            stream.cancel()
        call.succeeded(endpoint)
