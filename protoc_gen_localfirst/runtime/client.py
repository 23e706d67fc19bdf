"""Client cores that generated clients subclass: one per I/O style.

Generated clients are thin: each rpc method calls one of ``_unary_unary``,
``_unary_stream``, ``_stream_unary`` or ``_stream_stream`` with its entry of the
method table. Everything else happens here: discovery (``discovery`` sources
keep the endpoint set fresh), endpoint order (``Balancer``), nodes learned
from servers (``probe``), attempts and retries (``CallAttempts`` + tenacity),
replay of streamed requests (``replay``), and one long-lived channel per
endpoint, closed once its endpoint is gone and its calls have finished.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

import grpc
import grpc.aio
import tenacity

from protoc_gen_localfirst.runtime.balancer import Balancer, EjectionPolicy
from protoc_gen_localfirst.runtime.discovery import (
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
    make_source,
)
from protoc_gen_localfirst.runtime.endpoints import Endpoint
from protoc_gen_localfirst.runtime.h3_client import (
    AutoChannel,
    H3Channel,
    H3Options,
    Transport,
    TransportMemory,
)
from protoc_gen_localfirst.runtime.identity import own_node, own_zone
from protoc_gen_localfirst.runtime.methods import MethodInfo, RequestT, ResponseT
from protoc_gen_localfirst.runtime.probe import NodeProber, announced_node
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

DEFAULT_RESOLVE_TIMEOUT = 5.0
"""How long a call without a deadline waits for the first endpoint set."""


class _ClientCore(Generic[ChannelT]):
    """What both clients share: discovery, identity, endpoint order, retry policy, channels.

    ``target`` is ``dns:///NAME:PORT``, ``dns://DNS_IP:PORT/NAME:PORT``,
    ``kubernetes:///SERVICE.NAMESPACE:PORT`` or ``static:///IP:PORT@NODE[/ZONE],...``.
    ``node`` defaults to ``$NODE_NAME`` and ``zone`` to ``$LOCALFIRST_ZONE`` (else
    the zone of an endpoint on our node). ``retry`` is the default policy of
    every call (a call's own ``retry=`` wins); ``ejection`` sets how long
    unreachable endpoints are avoided; ``retry_buffer_limit`` is how many
    bytes of a request stream are kept for replay. ``dns`` and ``kubernetes``
    tune discovery, and ``source`` replaces it with your own ``EndpointSource``;
    ``probe_nodes`` health-checks new endpoints whose node is
    unknown (DNS) to learn it. ``channel_options`` are grpc channel arguments
    over ``DEFAULT_CHANNEL_OPTIONS``; ``credentials`` makes channels secure.

    ``transport`` (asyncio client only): ``"h2"`` (default) is grpc.aio over
    TCP; ``"h3"`` is gRPC over HTTP/3 (QUIC, UDP, same port) only; ``"auto"``
    tries HTTP/3 per endpoint and falls back to HTTP/2 when the QUIC handshake
    fails or times out, remembering that for ``h3_options.fallback_ttl``
    seconds (see ``h3_client``). HTTP/3 always uses TLS: server certificates
    are verified against ``ca_file`` (else the system CAs) and the endpoint's
    address; ``insecure_skip_verify=True`` disables that (logged). ``h2``
    channels keep using ``credentials``; health probes for node learning go
    over HTTP/2 whatever the transport.
    """

    _transports: frozenset[str] = frozenset({"h2", "h3", "auto"})

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
        dns: DnsOptions | None = None,
        kubernetes: KubernetesOptions | None = None,
        probe_nodes: bool = True,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
        source: EndpointSource | None = None,
        transport: Transport = "h2",
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
        h3_options: H3Options | None = None,
    ) -> None:
        if transport not in self._transports:
            raise ValueError(
                f"{type(self).__name__}: transport={transport!r} is not supported; "
                f"supported: {', '.join(sorted(self._transports))}"
                + ("" if "h3" in self._transports else " (HTTP/3 needs the asyncio client)")
            )
        self.transport: Transport = transport
        self._ca_file = ca_file
        self._insecure_skip_verify = insecure_skip_verify
        self._h3_options = h3_options or H3Options()
        self._transport_memory = TransportMemory()
        self.target = target
        self.source = source or make_source(target, dns=dns, kubernetes=kubernetes)
        self.node = own_node(node)
        self.retry_policy = retry or RetryPolicy()
        self.retry_buffer_limit = retry_buffer_limit
        self.resolve_timeout = resolve_timeout
        self._credentials = credentials
        options = dict(DEFAULT_CHANNEL_OPTIONS)
        options.update(dict(channel_options))
        self._channel_options = tuple(options.items())
        self._lock = threading.Lock()
        self._channels: dict[str, ChannelT] = {}
        self._retired: dict[str, ChannelT] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._resolved = threading.Event()
        self._closing: set[asyncio.Future[None]] = set()
        self.balancer = Balancer(
            node=self.node,
            zone=own_zone(zone),
            ejection=ejection,
            on_unreachable=lambda endpoint: self.source.request_refresh(),
        )
        self._prober = (
            NodeProber(
                self.balancer.learn_node,
                credentials=credentials,
                channel_options=self._channel_options,
            )
            if probe_nodes
            else None
        )
        self.source.start(self._on_endpoints)

    def wait_for_endpoints(self, timeout: float) -> bool:
        """Block until discovery delivered its first endpoint set (True) or ``timeout`` passed."""
        return self._resolved.wait(timeout)

    def endpoint_order(self) -> list[Endpoint]:
        """The order the next call would try endpoints in (for diagnostics)."""
        return self.balancer.order()

    def _on_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """A new endpoint set from discovery (any thread)."""
        self.balancer.update(endpoints)
        ready = {e.address for e in self.balancer.ready_endpoints}
        with self._lock:
            for address in [a for a in self._channels if a not in ready]:
                self._retired[address] = self._channels.pop(address)
            for address in [a for a in self._retired if a in ready]:
                self._channels[address] = self._retired.pop(address)
        self._resolved.set()
        if self._prober is not None:
            self._prober.probe_unknown(self.balancer.ready_endpoints)

    def _new_channel(self, endpoint: Endpoint) -> ChannelT:
        raise NotImplementedError

    def _close_channels(self, channels: list[ChannelT]) -> None:
        raise NotImplementedError

    def _acquire(self, endpoint: Endpoint) -> ChannelT:
        """The endpoint's channel, counted as in use until ``_release``."""
        with self._lock:
            channel = self._channels.get(endpoint.address) or self._retired.get(endpoint.address)
            if channel is None:
                channel = self._channels[endpoint.address] = self._new_channel(endpoint)
            self._in_flight[endpoint.address] += 1
            return channel

    def _release(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._in_flight[endpoint.address] -= 1
        self._close_idle_retired()

    def _close_idle_retired(self) -> None:
        """Close channels of endpoints that are gone once no call uses them."""
        with self._lock:
            idle = [a for a in self._retired if self._in_flight[a] <= 0]
            channels = [self._retired.pop(a) for a in idle]
            for address in idle:
                del self._in_flight[address]
        if channels:
            self._close_channels(channels)

    def _learn(self, endpoint: Endpoint, metadata: Sequence[tuple[str, Any]] | None) -> None:
        """Servers name their node in response metadata: keep the balancer's view right.

        Trailers for unary responses, headers for streamed ones (see ``server_announce``).
        """
        node = announced_node(metadata)
        if node is not None and node != endpoint.node:
            self.balancer.learn_node(endpoint.address, node)

    def _call_attempts(
        self, method: MethodInfo[Any, Any], timeout: float | None, retry: RetryPolicy | None
    ) -> CallAttempts:
        self._close_idle_retired()
        if not self._resolved.is_set():
            reason = f"no endpoints resolved yet for {self.target}"
        else:
            reason = f"{self.target} currently has no ready endpoints"
        if self.source.last_error:
            reason = f"{reason}: {self.source.last_error}"
        return CallAttempts(
            method=method.path,
            balancer=self.balancer,
            policy=retry or self.retry_policy,
            timeout=timeout,
            no_endpoints_reason=reason,
        )

    def _first_resolution_wait(self, timeout: float | None) -> float:
        return self.resolve_timeout if timeout is None else min(timeout, self.resolve_timeout)

    def _shutdown_discovery(self) -> list[ChannelT]:
        self.source.close()
        if self._prober is not None:
            self._prober.close()
        with self._lock:
            channels: list[ChannelT] = list(self._channels.values())
            channels.extend(self._retired.values())
            self._channels, self._retired = {}, {}
        return channels


def _headers_arrived(call: object) -> bool:
    """Whether response headers arrived (the call is then committed, gRFC A6).

    grpc exposes no "trailers-only" flag; a response that carried headers has
    non-empty initial metadata when the server put anything in it, as our
    server bootstrap always does (its node name).
    """
    initial_metadata = getattr(call, "initial_metadata", None)
    return callable(initial_metadata) and bool(initial_metadata())


def _multicallable(channel: Any, method: MethodInfo[Any, Any]) -> Any:
    """grpc's multi-callable for ``method`` (``MethodKind`` values are grpc's method names)."""
    return getattr(channel, method.kind.value)(
        method.path,
        request_serializer=method.serialize_request,
        response_deserializer=method.deserialize_response,
    )


def _attempt_failed(
    call: CallAttempts,
    endpoint: Endpoint,
    error: grpc.RpcError,
    replay: AsyncRequestReplay[Any] | SyncRequestReplay[Any] | None,
) -> AttemptFailed:
    """Record a failed attempt; committed once headers came or requests can't be replayed."""
    if _headers_arrived(error) or (replay is not None and not replay.replayable):
        call.committed = True
    return call.failed(endpoint, error)


def _metadata_tuple(metadata: Metadata | None) -> tuple[tuple[str, str | bytes], ...] | None:
    return None if metadata is None else tuple(metadata)


def _raise_final(call: CallAttempts, failure: AttemptFailed) -> NoReturn:
    error = call.final_error(failure)
    if error is failure.error:
        raise error
    raise error from failure.error


OpenAsyncCall = Callable[[grpc.aio.Channel, float | None], Any]
OpenSyncCall = Callable[[grpc.Channel, float | None], Any]


class AsyncClient(_ClientCore[grpc.aio.Channel]):
    """asyncio client core (grpc.aio): local-first endpoint order, failover, retries."""

    def _new_channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        if self.transport == "h2":
            return self._h2_channel(endpoint)
        h3 = H3Channel(
            endpoint.host,
            endpoint.port,
            ca_file=self._ca_file,
            insecure_skip_verify=self._insecure_skip_verify,
            options=self._h3_options,
            channel_options=self._channel_options,
        )
        if self.transport == "h3":
            return h3
        return AutoChannel(
            endpoint.address, h3, lambda: self._h2_channel(endpoint), self._transport_memory
        )

    def _h2_channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        target = endpoint.channel_target
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=self._channel_options)
        return grpc.aio.secure_channel(target, self._credentials, options=self._channel_options)

    def _close_channels(self, channels: list[grpc.aio.Channel]) -> None:
        # Called on the event loop (from a call path): closing is a coroutine.
        for channel in channels:
            closing = asyncio.ensure_future(channel.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop discovery and close every channel; calls in flight are cancelled."""
        channels = self._shutdown_discovery()
        await asyncio.gather(*(channel.close() for channel in channels), *self._closing)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _begin(
        self, method: MethodInfo[Any, Any], timeout: float | None, retry: RetryPolicy | None
    ) -> CallAttempts:
        if not self._resolved.is_set():
            await asyncio.to_thread(self._resolved.wait, self._first_resolution_wait(timeout))
        return self._call_attempts(method, timeout, retry)

    async def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        def open_call(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(request, timeout=attempt_timeout, metadata=metadata)

        response: ResponseT = await self._unary_response(
            await self._begin(method, timeout, retry), open_call, None
        )
        return response

    async def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        replay = AsyncRequestReplay(requests, self.retry_buffer_limit)

        def open_call(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(replay.attempt(), timeout=attempt_timeout, metadata=metadata)

        response: ResponseT = await self._unary_response(
            await self._begin(method, timeout, retry), open_call, replay
        )
        return response

    async def _unary_response(
        self, call: CallAttempts, open_call: OpenAsyncCall, replay: AsyncRequestReplay[Any] | None
    ) -> Any:
        try:
            async for attempt in tenacity.AsyncRetrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    grpc_call = open_call(self._acquire(endpoint), call.attempt_timeout())
                    try:
                        response = await grpc_call
                        self._learn(endpoint, await grpc_call.trailing_metadata())
                    except grpc.RpcError as error:
                        raise _attempt_failed(call, endpoint, error, replay) from error
                    finally:
                        self._release(endpoint)
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
        def open_call(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(request, timeout=attempt_timeout, metadata=metadata)

        return self._stream_responses(method, timeout, retry, open_call, None)

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

        def open_call(channel: grpc.aio.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(replay.attempt(), timeout=attempt_timeout, metadata=metadata)

        return self._stream_responses(method, timeout, retry, open_call, replay)

    async def _stream_responses(
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        open_call: OpenAsyncCall,
        replay: AsyncRequestReplay[Any] | None,
    ) -> AsyncIterator[Any]:
        """Retry until the call commits (headers or a first message), then stream.

        Only the part before the commit runs inside the retry loop: no message
        is ever yielded from inside a tenacity attempt, and none twice.
        """
        call = await self._begin(method, timeout, retry)
        stream: Any = None
        first: Any = grpc.aio.EOF
        endpoint: Endpoint | None = None
        try:
            async for attempt in tenacity.AsyncRetrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    stream = open_call(self._acquire(endpoint), call.attempt_timeout())
                    try:
                        headers = await stream.initial_metadata()
                        call.committed = bool(headers)
                        self._learn(endpoint, headers)
                        first = await stream.read()
                    except grpc.RpcError as error:
                        stream.cancel()
                        self._release(endpoint)
                        raise _attempt_failed(call, endpoint, error, replay) from error
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
            self._release(endpoint)
        call.succeeded(endpoint)


class SyncClient(_ClientCore[grpc.Channel]):
    """Blocking client core (grpc channels): same behaviour as ``AsyncClient``.

    HTTP/2 only: ``transport="h3"``/``"auto"`` raise ``ValueError`` here (the
    HTTP/3 transport is asyncio; use the asyncio client).
    """

    _transports: frozenset[str] = frozenset({"h2"})

    def _new_channel(self, endpoint: Endpoint) -> grpc.Channel:
        target = endpoint.channel_target
        if self._credentials is None:
            return grpc.insecure_channel(target, options=self._channel_options)
        return grpc.secure_channel(target, self._credentials, options=self._channel_options)

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

    def _begin(
        self, method: MethodInfo[Any, Any], timeout: float | None, retry: RetryPolicy | None
    ) -> CallAttempts:
        if not self._resolved.is_set():
            self._resolved.wait(self._first_resolution_wait(timeout))
        return self._call_attempts(method, timeout, retry)

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
            multicallable = _multicallable(channel, method)
            return multicallable.with_call(
                request, timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        response: ResponseT = self._unary_response(
            self._begin(method, timeout, retry), invoke, None
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
            multicallable = _multicallable(channel, method)
            return multicallable.with_call(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        response: ResponseT = self._unary_response(
            self._begin(method, timeout, retry), invoke, replay
        )
        return response

    def _unary_response(
        self, call: CallAttempts, invoke: OpenSyncCall, replay: SyncRequestReplay[Any] | None
    ) -> Any:
        try:
            for attempt in tenacity.Retrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    try:
                        response, grpc_call = invoke(
                            self._acquire(endpoint), call.attempt_timeout()
                        )
                        self._learn(endpoint, grpc_call.trailing_metadata())
                    except grpc.RpcError as error:
                        raise _attempt_failed(call, endpoint, error, replay) from error
                    finally:
                        self._release(endpoint)
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
        def open_call(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(
                request, timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        return self._stream_responses(method, timeout, retry, open_call, None)

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

        def open_call(channel: grpc.Channel, attempt_timeout: float | None) -> Any:
            multicallable = _multicallable(channel, method)
            return multicallable(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(metadata)
            )

        return self._stream_responses(method, timeout, retry, open_call, replay)

    def _stream_responses(
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        open_call: OpenSyncCall,
        replay: SyncRequestReplay[Any] | None,
    ) -> Iterator[Any]:
        """Retry until the call commits (headers or a first message), then stream."""
        call = self._begin(method, timeout, retry)
        stream: Any = None
        first: Any = None
        finished = False
        endpoint: Endpoint | None = None
        try:
            for attempt in tenacity.Retrying(**call.retrying_options()):
                with attempt:
                    endpoint = call.next_endpoint()
                    stream = open_call(self._acquire(endpoint), call.attempt_timeout())
                    try:
                        headers = stream.initial_metadata()
                        call.committed = bool(headers)
                        self._learn(endpoint, headers)
                        first = next(stream)
                    except StopIteration:
                        finished = True
                    except grpc.RpcError as error:
                        stream.cancel()
                        self._release(endpoint)
                        raise _attempt_failed(call, endpoint, error, replay) from error
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
            self._release(endpoint)
        call.succeeded(endpoint)
