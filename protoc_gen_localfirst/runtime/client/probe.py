"""Learn which node an endpoint runs on, and its load, by asking it (I/O edge).

DNS gives addresses, not nodes. Our server bootstrap names its node in the
``localfirst-node`` response metadata of every call, health checks included, so
a health Check to a newly seen endpoint tells the client where it runs before
the first real call goes there. Probes run in a small thread pool, so the
asyncio and the blocking client share this code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import announced_node
from protoc_gen_localfirst.runtime.loadreport import LoadReport, from_trailers

log = logging.getLogger("protoc_gen_localfirst.probe")


class NodeProber:
    """Health-checks endpoints whose node is unknown; reports what they announce."""

    def __init__(
        self,
        on_learned: Callable[[str, str], object],
        on_load: Callable[[Endpoint, LoadReport], object] | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        timeout: float = 2.0,
    ) -> None:
        self._on_learned = on_learned
        self._on_load = on_load
        self.credentials = credentials
        self._channel_options = tuple(channel_options)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._probing: set[str] = set()
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="localfirst-probe"
        )

    def probe_unknown(self, endpoints: Sequence[Endpoint]) -> None:
        """Start a probe for each endpoint with no node that is not being probed."""
        with self._lock:
            if self._pool is None:
                return
            for endpoint in endpoints:
                if endpoint.node is None and endpoint.address not in self._probing:
                    self._probing.add(endpoint.address)
                    self._pool.submit(self._probe, endpoint)

    def _probe(self, endpoint: Endpoint) -> None:
        try:
            node, load = self.ask(endpoint)
        finally:
            with self._lock:
                self._probing.discard(endpoint.address)
        if node is not None:
            self._on_learned(endpoint.address, node)
        if load is not None and self._on_load is not None:
            self._on_load(endpoint, load)

    def ask(self, endpoint: Endpoint) -> tuple[str | None, LoadReport | None]:
        """One health Check: the node its response names and the load it reports (or None)."""
        target = endpoint.channel_target
        if self.credentials is None:
            channel = grpc.insecure_channel(target, options=self._channel_options)
        else:
            channel = grpc.secure_channel(target, self.credentials, options=self._channel_options)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                _, call = stub.Check.with_call(
                    health_pb2.HealthCheckRequest(), timeout=self._timeout
                )
            except grpc.RpcError as error:
                trailers = _trailing(error)
                node = announced_node(trailers)
                if node is None:
                    log.debug("probe of %s failed: %s", endpoint.address, error)
                return node, from_trailers(trailers)
            trailers = call.trailing_metadata()
            return announced_node([*call.initial_metadata(), *trailers]), from_trailers(trailers)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _trailing(error: grpc.RpcError) -> Sequence[tuple[str, Any]] | None:
    trailing = getattr(error, "trailing_metadata", None)
    return trailing() if callable(trailing) else None
