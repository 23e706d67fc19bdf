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
from typing import Any, Generic, NoReturn, Self, TypeAlias, TypeVar

import grpc
import grpc.aio
import tenacity

from protoc_gen_localfirst.runtime.client.balancer import Balancer, EjectionPolicy
from protoc_gen_localfirst.runtime.client.observers import CallObserver, ClientStats, notify
from protoc_gen_localfirst.runtime.client.probe import NodeProber, announced_node
from protoc_gen_localfirst.runtime.client.replay import (
    DEFAULT_BUFFER_LIMIT,
    AsyncRequestReplay,
    SyncRequestReplay,
)
from protoc_gen_localfirst.runtime.client.retry import (
    PREVIOUS_ATTEMPTS_KEY,
    AttemptFailed,
    CallAttempts,
    RetryPolicy,
    RetryThrottle,
    RetryThrottling,
    allowed_codes,
    effective_policy,
)
from protoc_gen_localfirst.runtime.discovery import (
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
    make_source,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.http3.client import (
    AutoChannel,
    H3Channel,
    H3Options,
    Transport,
    TransportMemory,
)
from protoc_gen_localfirst.runtime.identity import own_node, own_zone
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, RequestT, ResponseT

Metadata = Sequence[tuple[str, str | bytes]]
_MessageT = TypeVar("_MessageT")
RequestStream: TypeAlias = AsyncIterable[_MessageT] | Iterable[_MessageT]
"""What an asyncio client-streaming method takes: an async or a plain iterable."""
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


class _MethodEntry:
    """What a client works out once per rpc: path, effective policy, retryable codes."""

    __slots__ = ("codes", "info", "path", "policy")

    def __init__(self, info: MethodInfo[Any, Any], client_default: RetryPolicy) -> None:
        self.info = info
        self.path = info.path
        self.policy = effective_policy(info, client_default, None)
        self.codes = allowed_codes(info, self.policy)


def _hedges(info: MethodInfo[Any, Any], policy: RetryPolicy) -> bool:
    return (
        policy.hedging_delay is not None
        and policy.max_attempts > 1
        and info.idempotency is Idempotency.NO_SIDE_EFFECTS
        and not info.kind.client_streaming
        and not info.kind.server_streaming
    )


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

    Policy of a call: its own ``retry=`` wins, else the proto's policy for the
    rpc (``MethodInfo.policy``) over the client's ``retry``. ``throttling`` is
    the gRFC A6 retry token bucket of this client's target (``False`` turns it
    off). ``observers`` receive attempt, retry, failover, hedge, throttling,
    ejection and endpoint-change events (``metrics.CallObserver``);
    ``client.stats`` counts the same.

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
        throttling: RetryThrottling | bool = True,
        observers: Sequence[CallObserver] = (),
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
        self.stats = ClientStats()
        self.observers: tuple[CallObserver, ...] = tuple(observers)
        if throttling is False:
            self.throttle: RetryThrottle | None = None
        else:
            self.throttle = RetryThrottle(
                throttling if isinstance(throttling, RetryThrottling) else None
            )
        self._methods: dict[int, _MethodEntry] = {}
        self._callables: dict[tuple[str, str], tuple[Any, Any]] = {}
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
            on_ejection=self._on_ejection,
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
        old = self.balancer.ready_endpoints
        self.balancer.update(endpoints)
        new = self.balancer.ready_endpoints
        if {e.address for e in old} != {e.address for e in new}:
            self.stats.endpoint_changes += 1
            if self.observers:
                notify(self.observers, "on_endpoints_changed", old, new)
        ready = {e.address for e in new}
        with self._lock:
            for address in [a for a in self._channels if a not in ready]:
                self._retired[address] = self._channels.pop(address)
            for address in [a for a in self._retired if a in ready]:
                self._channels[address] = self._retired.pop(address)
        self._resolved.set()
        if self._prober is not None:
            self._prober.probe_unknown(self.balancer.ready_endpoints)

    def _on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        self.stats.ejections += 1
        if self.observers:
            notify(self.observers, "on_ejection", endpoint, duration)

    def _new_channel(self, endpoint: Endpoint) -> ChannelT:
        raise NotImplementedError

    def _close_channels(self, channels: list[ChannelT]) -> None:
        raise NotImplementedError

    def _acquire(self, endpoint: Endpoint, path: str, info: MethodInfo[Any, Any]) -> Any:
        """grpc's multi-callable for ``info`` on the endpoint's channel, in use until ``_release``.

        Multi-callables are cached per endpoint and method (``MethodKind``
        values are grpc's method names).
        """
        address = endpoint.address
        with self._lock:
            channel = self._channels.get(address) or self._retired.get(address)
            if channel is None:
                channel = self._channels[address] = self._new_channel(endpoint)
            self._in_flight[address] += 1
        key = (address, path)
        cached = self._callables.get(key)
        if cached is not None and cached[0] is channel:
            return cached[1]
        multicallable = getattr(channel, info.kind.value)(
            path,
            request_serializer=info.serialize_request,
            response_deserializer=info.deserialize_response,
        )
        self._callables[key] = (channel, multicallable)
        return multicallable

    def _release(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._in_flight[endpoint.address] -= 1
        if self._retired:
            self._close_idle_retired()

    def _close_idle_retired(self) -> None:
        """Close channels of endpoints that are gone once no call uses them."""
        if not self._retired:
            return
        with self._lock:
            idle = [a for a in self._retired if self._in_flight[a] <= 0]
            channels = [self._retired.pop(a) for a in idle]
            for address in idle:
                del self._in_flight[address]
            gone = set(idle)
            for key in [k for k in self._callables if k[0] in gone]:
                del self._callables[key]
        if channels:
            self._close_channels(channels)

    def _learn(self, endpoint: Endpoint, metadata: Sequence[tuple[str, Any]] | None) -> None:
        """Servers name their node in response metadata: keep the balancer's view right.

        Trailers for unary responses, headers for streamed ones (see ``server_announce``).
        """
        node = announced_node(metadata)
        if node is not None and node != endpoint.node:
            self.balancer.learn_node(endpoint.address, node)

    def _no_endpoints_reason(self) -> str:
        if not self._resolved.is_set():
            reason = f"no endpoints resolved yet for {self.target}"
        else:
            reason = f"{self.target} currently has no ready endpoints"
        if self.source.last_error:
            reason = f"{reason}: {self.source.last_error}"
        return reason

    def _entry(self, method: MethodInfo[Any, Any]) -> _MethodEntry:
        entry = self._methods.get(id(method))
        if entry is None or entry.info is not method:
            entry = self._methods[id(method)] = _MethodEntry(method, self.retry_policy)
        return entry

    def _call_attempts(
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        metadata: Metadata | None = None,
    ) -> CallAttempts:
        if self._retired:
            self._close_idle_retired()
        entry = self._entry(method)
        if retry is None:
            policy, codes = entry.policy, entry.codes
        else:
            policy, codes = retry, allowed_codes(method, retry)
        call = CallAttempts(
            method=entry.path,
            balancer=self.balancer,
            policy=policy,
            timeout=timeout,
            no_endpoints_reason=self._no_endpoints_reason,
            retryable_codes=codes,
            throttle=self.throttle,
        )
        call.info = method
        call.metadata = metadata
        self.stats.calls += 1
        return call

    def _next_attempt(self, call: CallAttempts, hedged: bool = False) -> tuple[Endpoint, Any, Any]:
        """Start bookkeeping for the next attempt: endpoint, multi-callable, metadata."""
        endpoint = call.next_endpoint()
        number = call.started
        self.stats.attempts += 1
        metadata: Any = call.metadata
        if number > 1:
            previous = (PREVIOUS_ATTEMPTS_KEY, str(number - 1))
            metadata = (*metadata, previous) if metadata else (previous,)
            if hedged:
                self.stats.hedges += 1
            elif call.records and call.records[-1].endpoint.address != endpoint.address:
                self.stats.failovers += 1
                if self.observers:
                    notify(
                        self.observers,
                        "on_failover",
                        call.method,
                        call.records[-1].endpoint,
                        endpoint,
                    )
        if self.observers:
            notify(self.observers, "on_attempt", endpoint, call.method, number, hedged)
            if hedged:
                notify(self.observers, "on_hedge", call.method, endpoint, number)
        assert call.info is not None
        return endpoint, self._acquire(endpoint, call.method, call.info), metadata

    def _before_sleep(self, call: CallAttempts) -> Callable[[tenacity.RetryCallState], None]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.stats.retries += 1
            failure = state.outcome.exception() if state.outcome is not None else None
            if isinstance(failure, AttemptFailed):
                if failure.pushback is not None:
                    self.stats.pushbacks += 1
                if self.observers:
                    delay = state.upcoming_sleep or 0.0
                    notify(
                        self.observers,
                        "on_retry",
                        call.method,
                        state.attempt_number,
                        failure.record.code,
                        delay,
                    )

        return before_sleep

    def _raise_final(self, call: CallAttempts, failure: AttemptFailed) -> NoReturn:
        if failure.throttled:
            self.stats.throttled += 1
            if self.observers:
                notify(self.observers, "on_throttled", call.method)
        _raise_final(call, failure)

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


def _metadata_tuple(metadata: Any) -> tuple[tuple[str, str | bytes], ...] | None:
    return None if metadata is None else tuple(metadata)


def _raise_final(call: CallAttempts, failure: AttemptFailed) -> NoReturn:
    error = call.final_error(failure)
    if error is failure.error:
        raise error
    raise error from failure.error


OpenCall = Callable[[Any, float | None, Any], Any]
"""(multi-callable, attempt timeout, attempt metadata) -> grpc call."""


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
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        metadata: Metadata | None,
    ) -> CallAttempts:
        if not self._resolved.is_set():
            await asyncio.to_thread(self._resolved.wait, self._first_resolution_wait(timeout))
        return self._call_attempts(method, timeout, retry, metadata)

    async def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(request, timeout=attempt_timeout, metadata=md)

        call = await self._begin(method, timeout, retry, metadata)
        response: ResponseT
        if _hedges(method, call.policy):
            response = await self._hedged_response(call, open_call)
        else:
            response = await self._unary_response(call, open_call, None)
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

        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(replay.attempt(), timeout=attempt_timeout, metadata=md)

        response: ResponseT = await self._unary_response(
            await self._begin(method, timeout, retry, metadata), open_call, replay
        )
        return response

    async def _unary_attempt(
        self,
        call: CallAttempts,
        open_call: OpenCall,
        replay: AsyncRequestReplay[Any] | None,
        hedged: bool = False,
    ) -> Any:
        endpoint, multicallable, metadata = self._next_attempt(call, hedged)
        try:
            grpc_call = open_call(multicallable, call.attempt_timeout(), metadata)
            try:
                response = await grpc_call
                self._learn(endpoint, await grpc_call.trailing_metadata())
            except grpc.RpcError as error:
                raise _attempt_failed(call, endpoint, error, replay) from error
            except asyncio.CancelledError:
                grpc_call.cancel()
                raise
        finally:
            self._release(endpoint)
        call.succeeded(endpoint)
        return response

    async def _unary_response(
        self, call: CallAttempts, open_call: OpenCall, replay: AsyncRequestReplay[Any] | None
    ) -> Any:
        # The first attempt runs without building a retry loop (the common case
        # succeeds); its failure is handed to tenacity, which decides and waits.
        try:
            return await self._unary_attempt(call, open_call, replay)
        except AttemptFailed as failure:
            first: AttemptFailed | None = failure
        assert first is not None
        if not first.retryable:
            self._raise_final(call, first)
        try:
            retrying = tenacity.AsyncRetrying(
                **call.retrying_options(before_sleep=self._before_sleep(call))
            )
            async for attempt in retrying:
                with attempt:
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    return await self._unary_attempt(call, open_call, replay)
        except AttemptFailed as failure:
            self._raise_final(call, failure)
        raise AssertionError("tenacity ended without an outcome")

    async def _hedged_response(self, call: CallAttempts, open_call: OpenCall) -> Any:
        """gRFC A6 hedging: attempts to successive endpoints every ``hedging_delay``.

        The first OK answer wins and the other attempts are cancelled. A failure
        with a non-fatal (retryable) code sends the next attempt at once; any
        other failure cancels the rest and is the call's answer. Pushback "do
        not retry", throttling or the deadline stop new attempts; those in
        flight still may answer.
        """
        delay = call.policy.hedging_delay or 0.0
        pending: dict[asyncio.Task[Any], int] = {}
        last: AttemptFailed | None = None
        more = True
        sent = 0  # attempts started (the tasks count call.started once they run)
        try:
            while True:
                if more and sent < call.policy.max_attempts and not call.deadline_passed():
                    hedged = sent > 0
                    if hedged and call.throttle is not None and not call.throttle.allows_retry():
                        more = False
                        self.stats.throttled += 1
                        if self.observers:
                            notify(self.observers, "on_throttled", call.method)
                    else:
                        task = asyncio.ensure_future(
                            self._unary_attempt(call, open_call, None, hedged)
                        )
                        sent += 1
                        pending[task] = sent
                wait: float | None = None
                if more and sent < call.policy.max_attempts:
                    wait = delay
                    if call.pushback is not None:
                        wait, call.pushback = call.pushback, None
                if not pending:
                    break
                done, _ = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    number = pending.pop(task)
                    try:
                        response = task.result()
                    except AttemptFailed as failure:
                        last = failure
                        if failure.retryable:
                            continue  # non-fatal: the next hedge goes now
                        if failure.record.code in call.retryable_codes and not call.committed:
                            more = False  # pushback "do not retry", or throttled
                            continue
                        self._raise_final(call, failure)
                    if number > 1:
                        self.stats.hedge_wins += 1
                    return response
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        assert last is not None, "hedging ended without an attempt"
        self._raise_final(call, last)

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> AsyncIterator[ResponseT]:
        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(request, timeout=attempt_timeout, metadata=md)

        return self._stream_responses(method, timeout, retry, metadata, open_call, None)

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

        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(replay.attempt(), timeout=attempt_timeout, metadata=md)

        return self._stream_responses(method, timeout, retry, metadata, open_call, replay)

    async def _stream_responses(
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        metadata: Metadata | None,
        open_call: OpenCall,
        replay: AsyncRequestReplay[Any] | None,
    ) -> AsyncIterator[Any]:
        """Retry until the call commits (headers or a first message), then stream.

        Only the part before the commit runs inside the retry loop: no message
        is ever yielded from inside a tenacity attempt, and none twice.
        """
        call = await self._begin(method, timeout, retry, metadata)
        stream: Any = None
        first: Any = grpc.aio.EOF
        endpoint: Endpoint | None = None
        try:
            retrying = tenacity.AsyncRetrying(
                **call.retrying_options(before_sleep=self._before_sleep(call))
            )
            async for attempt in retrying:
                with attempt:
                    endpoint, multicallable, attempt_metadata = self._next_attempt(call)
                    stream = open_call(multicallable, call.attempt_timeout(), attempt_metadata)
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
            self._raise_final(call, failure)
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
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        metadata: Metadata | None,
    ) -> CallAttempts:
        if not self._resolved.is_set():
            self._resolved.wait(self._first_resolution_wait(timeout))
        return self._call_attempts(method, timeout, retry, metadata)

    def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        def invoke(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable.with_call(
                request, timeout=attempt_timeout, metadata=_metadata_tuple(md)
            )

        response: ResponseT = self._unary_response(
            self._begin(method, timeout, retry, metadata), invoke, None
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

        def invoke(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable.with_call(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(md)
            )

        response: ResponseT = self._unary_response(
            self._begin(method, timeout, retry, metadata), invoke, replay
        )
        return response

    def _unary_attempt(
        self, call: CallAttempts, invoke: OpenCall, replay: SyncRequestReplay[Any] | None
    ) -> Any:
        endpoint, multicallable, metadata = self._next_attempt(call)
        try:
            response, grpc_call = invoke(multicallable, call.attempt_timeout(), metadata)
            self._learn(endpoint, grpc_call.trailing_metadata())
        except grpc.RpcError as error:
            raise _attempt_failed(call, endpoint, error, replay) from error
        finally:
            self._release(endpoint)
        call.succeeded(endpoint)
        return response

    def _unary_response(
        self, call: CallAttempts, invoke: OpenCall, replay: SyncRequestReplay[Any] | None
    ) -> Any:
        try:
            return self._unary_attempt(call, invoke, replay)
        except AttemptFailed as failure:
            first: AttemptFailed | None = failure
        assert first is not None
        if not first.retryable:
            self._raise_final(call, first)
        try:
            retrying = tenacity.Retrying(
                **call.retrying_options(before_sleep=self._before_sleep(call))
            )
            for attempt in retrying:
                with attempt:
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    return self._unary_attempt(call, invoke, replay)
        except AttemptFailed as failure:
            self._raise_final(call, failure)
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
        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(request, timeout=attempt_timeout, metadata=_metadata_tuple(md))

        return self._stream_responses(method, timeout, retry, metadata, open_call, None)

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

        def open_call(multicallable: Any, attempt_timeout: float | None, md: Any) -> Any:
            return multicallable(
                replay.attempt(), timeout=attempt_timeout, metadata=_metadata_tuple(md)
            )

        return self._stream_responses(method, timeout, retry, metadata, open_call, replay)

    def _stream_responses(
        self,
        method: MethodInfo[Any, Any],
        timeout: float | None,
        retry: RetryPolicy | None,
        metadata: Metadata | None,
        open_call: OpenCall,
        replay: SyncRequestReplay[Any] | None,
    ) -> Iterator[Any]:
        """Retry until the call commits (headers or a first message), then stream."""
        call = self._begin(method, timeout, retry, metadata)
        stream: Any = None
        first: Any = None
        finished = False
        endpoint: Endpoint | None = None
        try:
            retrying = tenacity.Retrying(
                **call.retrying_options(before_sleep=self._before_sleep(call))
            )
            for attempt in retrying:
                with attempt:
                    endpoint, multicallable, attempt_metadata = self._next_attempt(call)
                    stream = open_call(multicallable, call.attempt_timeout(), attempt_metadata)
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
            self._raise_final(call, failure)
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
