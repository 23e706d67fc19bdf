"""What the asyncio and the blocking client share: everything but the I/O.

Generated clients subclass ``AsyncClient`` (``aio``) or ``SyncClient``
(``sync``); each rpc method calls one of ``_unary_unary``, ``_unary_stream``,
``_stream_unary`` or ``_stream_stream`` with its entry of the method table.
This core keeps discovery (``discovery`` sources keep the endpoint set
fresh), the endpoint order (``Balancer``), nodes learned from servers
(``probe``), the channel pool, and per-method call settings; it starts each
call's sans-IO state machine (``call.CallState``), which the drivers in
``aio`` and ``sync`` run with a short loop each.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar

import grpc

from protoc_gen_localfirst.runtime.client import validation
from protoc_gen_localfirst.runtime.client.actions import AwaitEndpoints, CallSettings, Metadata
from protoc_gen_localfirst.runtime.client.balancer import Balancer, EjectionPolicy, LockedBalancer
from protoc_gen_localfirst.runtime.client.call import CallState
from protoc_gen_localfirst.runtime.client.channels import ChannelPool
from protoc_gen_localfirst.runtime.client.load import LocalityPolicy
from protoc_gen_localfirst.runtime.client.observers import CallObserver, ClientEvents, ClientStats
from protoc_gen_localfirst.runtime.client.policy import (
    RetryPolicy,
    allowed_codes,
    effective_policy,
    hedges,
)
from protoc_gen_localfirst.runtime.client.probe import NodeProber
from protoc_gen_localfirst.runtime.client.replay import DEFAULT_BUFFER_LIMIT
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottle, RetryThrottling
from protoc_gen_localfirst.runtime.client.tls import client_tls
from protoc_gen_localfirst.runtime.client.tls_reload import TlsFileWatcher
from protoc_gen_localfirst.runtime.discovery import (
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
    make_source,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import own_node, own_zone
from protoc_gen_localfirst.schema import MethodInfo

if TYPE_CHECKING:
    from protoc_gen_localfirst.runtime.http3.options import H3Options, Transport

ChannelT = TypeVar("ChannelT")

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
"""How long a call without a deadline waits for the first endpoint set, and keeps
retrying attempts that could not be sent (no endpoint reachable)."""

ENDPOINT_POLL = 0.005
"""Seconds between looks at the endpoint set while a call waits for it to change."""


class CallOptions(TypedDict):
    """The keywords every generated method passes to the client core."""

    timeout: float | None
    metadata: Metadata | None
    retry: RetryPolicy | None


class Requests(Protocol):
    """What an attempt sends: ``SingleRequest`` or a replayable request stream."""

    @property
    def replayable(self) -> bool:
        """False once requests an earlier attempt sent can no longer be sent again."""

    def attempt(self) -> Any:
        """The request (or request iterator) for a new attempt."""


class ClientCore(Generic[ChannelT]):
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
    over ``DEFAULT_CHANNEL_OPTIONS``.

    TLS, one setting for both transports: ``ca_file`` (the CAs that sign the
    servers' certificates), ``certfile``/``keyfile`` (a client certificate,
    mTLS) or ``tls=True`` (the system CAs) turn it on. Server certificates are
    verified against ``server_name``; by default the host of a ``dns:///``
    target, the Service's DNS name for ``kubernetes:///`` (see
    ``KubernetesOptions.cluster_domain``), the endpoint address for
    ``static:///``, although connections go to the endpoints' addresses.
    ``credentials`` (grpc's own, HTTP/2 only) is the alternative to these.

    Policy of a call: its own ``retry=`` wins, else the proto's policy for the
    rpc (``MethodInfo.policy``) over the client's ``retry``. ``throttling`` is
    the gRFC A6 retry token bucket of this client's target (``False`` turns it
    off). ``observers`` receive attempt, retry, failover, hedge, throttling,
    ejection and endpoint-change events (``observers.CallObserver``);
    ``client.stats`` counts the same (``protoc_gen_localfirst.otel`` is an
    OpenTelemetry observer). ``interceptors``: grpc client interceptors, run
    around every attempt (see ``AsyncClient``/``SyncClient``). ``locality`` says how much traffic the
    caller's own node keeps when it is busy (``load.LocalityPolicy``: by
    default the local tier keeps what its replicas can serve and the excess
    spills to the next tier; ``LocalityPolicy(spill=False)`` is strict).

    ``transport`` (asyncio client only): ``"h2"`` (default) is grpc.aio over
    TCP; ``"h3"`` is gRPC over HTTP/3 (QUIC, UDP, same port) only; ``"auto"``
    tries HTTP/3 per endpoint and falls back to HTTP/2 when the QUIC handshake
    fails or times out, remembering that for ``h3_options.fallback_ttl``
    seconds (see ``http3.client``). HTTP/3 always uses TLS, so ``"h3"`` and
    ``"auto"`` need it on; ``"auto"`` falls back to HTTP/2 over the same TLS
    only when QUIC gets no answer, never when a certificate fails to verify.
    ``insecure_skip_verify=True`` (``"h3"`` only) verifies nothing (logged).
    Health probes for node learning go over HTTP/2 whatever the transport.
    """

    _transports: frozenset[str] = frozenset({"h2", "h3", "auto"})
    _interceptor_types: tuple[type, ...] = ()
    _interceptor_accepted = ""
    _calls_in_threads = True
    """Whether calls run in several threads (the blocking client): the balancer then
    guards what calls change with a lock; on one event loop nothing needs one."""

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
        ca_file: str | os.PathLike[str] | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
        tls: bool | None = None,
        insecure_skip_verify: bool = False,
        h3_options: H3Options | None = None,
        throttling: RetryThrottling | bool = True,
        observers: Sequence[CallObserver] = (),
        locality: LocalityPolicy | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        given = {name: value for name, value in locals().items() if name != "self"}
        self.transport = self._checked_transport(validation.check_transport_type(transport))
        given["transport"] = self.transport
        del given["interceptors"]
        validation.check_client_options(h3_available="h3" in self._transports, **given)
        self._interceptors: tuple[Any, ...] = validation.check_interceptors(
            interceptors, self._interceptor_types, self._interceptor_accepted
        )
        self._h3_options = h3_options
        self.target = target
        self.source = source or make_source(target, dns=dns, kubernetes=kubernetes)
        self.tls = client_tls(given, self.source.server_name)
        """The TLS setting of both transports (None: plaintext, or ``credentials``)."""
        self._credentials, self._channel_options = self._http2_channel_settings(
            credentials, channel_options
        )
        self.node = own_node(node)
        self.retry_policy = retry or RetryPolicy()
        self.events = ClientEvents(observers)
        self.throttle = _retry_throttle(throttling)
        self.retry_buffer_limit = retry_buffer_limit
        self.resolve_timeout = resolve_timeout
        self.channels: ChannelPool[ChannelT] = ChannelPool(
            self._new_channel, self._close_channels, threaded=self._calls_in_threads
        )
        self._settings: dict[int, CallSettings] = {}
        self._resolved = threading.Event()
        self._has_endpoints = False  # _resolved is set (read per call: cheaper than is_set)
        self.balancer = self._new_balancer(zone, ejection, locality)
        self._start_background_work(probe_nodes)

    def _start_background_work(self, probe_nodes: bool) -> None:
        """What runs beside the calls: node probes, the TLS file watcher, discovery
        (last: its first answer may come at once and uses the others)."""
        self.prober = self._node_prober(self._credentials) if probe_nodes else None
        self._tls_watcher = self._watch_tls_files()
        self.source.start(self._on_endpoints)

    def _new_balancer(
        self, zone: str | None, ejection: EjectionPolicy | None, locality: LocalityPolicy | None
    ) -> Balancer:
        # Only the blocking client has calls on several threads.
        kind = LockedBalancer if self._calls_in_threads else Balancer
        return kind(
            node=self.node,
            zone=own_zone(zone),
            ejection=ejection,
            on_unreachable=lambda endpoint: self.source.request_refresh(),
            on_ejection=self.events.ejection,
            locality=locality,
        )

    def _http2_channel_settings(
        self,
        credentials: grpc.ChannelCredentials | None,
        channel_options: Sequence[tuple[str, Any]],
    ) -> tuple[grpc.ChannelCredentials | None, tuple[tuple[str, Any], ...]]:
        """The HTTP/2 channels' credentials and arguments: from ``self.tls`` when TLS is
        on (``credentials`` otherwise), over ``DEFAULT_CHANNEL_OPTIONS``."""
        if self.tls is not None and not self.tls.skip_verify:
            credentials = self.tls.grpc_credentials()
            channel_options = (*channel_options, *self.tls.grpc_channel_options())
        return credentials, tuple({**DEFAULT_CHANNEL_OPTIONS, **dict(channel_options)}.items())

    def _watch_tls_files(self) -> TlsFileWatcher | None:
        """HTTP/2 channels keep the credentials they were made with: a watcher renews
        them when ``ca_file``/``certfile``/``keyfile`` change (HTTP/3 re-reads the files
        at each connection by itself)."""
        tls = self.tls
        if tls is None or tls.skip_verify or self.transport == "h3":
            return None
        if tls.ca_file is None and tls.certfile is None:
            return None  # the system CAs: no file of the client's to follow
        return TlsFileWatcher(tls, self._renew_credentials)

    def _renew_credentials(self, credentials: grpc.ChannelCredentials) -> None:
        """New TLS credentials (the watcher's thread): new connections use them."""
        self._credentials = credentials
        if self.prober is not None:
            self.prober.credentials = credentials
        self.channels.renew()

    def _node_prober(self, credentials: grpc.ChannelCredentials | None) -> NodeProber:
        """Health checks that learn new endpoints' nodes and load (over HTTP/2)."""
        return NodeProber(
            self.balancer.learn_node,
            on_load=self.balancer.reported,
            credentials=credentials,
            channel_options=self._channel_options,
        )

    def _checked_transport(self, transport: Transport) -> Transport:
        if transport not in self._transports:
            raise ValueError(
                f"{type(self).__name__}: transport={transport!r} is not supported; "
                f"supported: {', '.join(sorted(self._transports))}"
                + ("" if "h3" in self._transports else " (HTTP/3 needs the asyncio client)")
            )
        return transport

    @property
    def stats(self) -> ClientStats:
        """Counters of this client's calls (``observers.ClientStats``)."""
        return self.events.stats

    @property
    def observers(self) -> tuple[CallObserver, ...]:
        return self.events.observers

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
        ready = {e.address for e in new}
        if {e.address for e in old} != ready:
            self.events.endpoints_changed(old, new)
        self.channels.keep_only(ready)
        self._resolved.set()
        self._has_endpoints = True
        if self.prober is not None:
            self.prober.probe_unknown(new)

    def _new_channel(self, endpoint: Endpoint) -> ChannelT:
        raise NotImplementedError

    def _close_channels(self, channels: list[ChannelT]) -> None:
        raise NotImplementedError

    def _no_endpoints_reason(self) -> str:
        if not self._resolved.is_set():
            reason = f"no endpoints resolved yet for {self.target}"
        else:
            reason = f"{self.target} currently has no ready endpoints"
        error = self.source.last_error
        if error:  # sources start their errors with the target: say it once
            reason = f"{reason}: {error.removeprefix(f'{self.target}: ')}"
        return reason

    def _call_settings(
        self, method: MethodInfo[Any, Any], retry: RetryPolicy | None
    ) -> CallSettings:
        """Worked out once per rpc (and per call only when the call overrides ``retry``);
        ``_new_call`` looks in the cache first."""
        policy = effective_policy(method, self.retry_policy, retry)
        settings = CallSettings(
            info=method,
            policy=policy,
            retryable_codes=allowed_codes(method, policy),
            hedging=hedges(method, policy),
            balancer=self.balancer,
            events=self.events,
            throttle=self.throttle,
            no_endpoints_reason=self._no_endpoints_reason,
            refresh=lambda: self.source.request_refresh(force=True),
            unsent_patience=self.resolve_timeout,
            target=self.target,
            transport=self.transport,
        )
        if retry is None:
            self._settings[id(method)] = settings
        return settings

    def _new_call(self, method: MethodInfo[Any, Any], options: CallOptions) -> CallState:
        """The call's state machine, once its ``options`` are checked."""
        validation.check_call_options(options)
        if self.channels.closing_due:
            self.channels.close_idle()
        retry = options["retry"]
        settings = self._settings.get(id(method)) if retry is None else None
        if settings is None or settings.info is not method:  # first call, or its own retry=
            settings = self._call_settings(method, retry)
        return CallState(settings, timeout=options["timeout"], metadata=options["metadata"])

    def _endpoints_unchanged(self, action: AwaitEndpoints, started: float) -> bool:
        """While a call waits for discovery: still the same endpoint set, and time left."""
        in_time = time.monotonic() - started < action.seconds
        return in_time and self.balancer.version == action.version

    def _first_resolution_wait(self, options: CallOptions) -> float | None:
        """Check the call's options; how long it must wait for discovery's first answer
        (None: it has come). Each driver's ``_begin`` calls this first."""
        validation.check_call_options(options)
        if self._has_endpoints:
            return None
        timeout = options["timeout"]
        return self.resolve_timeout if timeout is None else min(timeout, self.resolve_timeout)

    def _shutdown_discovery(self) -> list[ChannelT]:
        self.source.close()
        if self._tls_watcher is not None:
            self._tls_watcher.close()
        if self.prober is not None:
            self.prober.close()
        return self.channels.take_all()


def _retry_throttle(throttling: RetryThrottling | bool) -> RetryThrottle | None:
    if throttling is False:
        return None
    return RetryThrottle(throttling if isinstance(throttling, RetryThrottling) else None)
