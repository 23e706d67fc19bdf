"""Endpoint discovery: sources that keep a target's set of endpoints fresh.

A source turns a target (``static:///``, ``dns:///``, ``kubernetes:///``) into
full endpoint sets over time and hands each set to a listener. Sources that
do I/O run it in their own daemon thread, so the asyncio client and the
blocking client use them the same way; the balancer only ever sees snapshots.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, Target

log = logging.getLogger("protoc_gen_localfirst.discovery")

Listener = Callable[[Sequence[Endpoint]], None]
"""Receives every new full endpoint set (an empty set is a real state)."""


class DiscoveryError(Exception):
    """Discovery cannot work for this target; the message names target and cause."""


class EndpointSource(ABC):
    """Keeps the endpoint set of one target fresh and pushes it to a listener."""

    server_name: str | None = None
    """The name this target's servers' certificates carry (a DNS name), which
    clients verify although they connect to endpoint addresses; None: each
    endpoint's address is its name."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.last_error: str | None = None
        """Why the latest refresh failed (None after a success); shown in call errors."""

    @abstractmethod
    def start(self, listener: Listener) -> None:
        """Begin discovery; ``listener`` gets each full set, from any thread.

        Must not block on I/O: sources that resolve or watch do it in a thread.
        """

    def request_refresh(self, *, force: bool = False) -> None:
        """An endpoint just failed: re-resolve soon. Rate limited by the source,
        unless ``force`` (every known endpoint failed to connect: a client asks once).

        The default does nothing (sources that watch already hear of changes).
        """

    @abstractmethod
    def close(self) -> None:
        """Stop discovering; no listener call after this returns."""


@dataclass(frozen=True)
class DnsOptions:
    """How ``dns:///`` targets are re-resolved.

    The set is refreshed when the shortest TTL of the answer runs out, but no
    sooner than ``min_interval`` and no later than ``max_interval``; and at
    once when an endpoint fails, at most once per ``failure_refresh_interval``.
    ``timeout`` bounds one lookup (A and AAAA).
    """

    min_interval: float = 1.0
    max_interval: float = 30.0
    failure_refresh_interval: float = 1.0
    timeout: float = 2.0


@dataclass(frozen=True)
class KubernetesOptions:
    """How ``kubernetes:///service.namespace:port`` targets are watched.

    ``kubeconfig`` None means in-cluster config, else that kubeconfig file.
    ``fallback_target`` (e.g. ``dns:///svc.ns.svc.cluster.local:50051``) is used
    instead when the API refuses (403: missing RBAC) or cannot be reached.
    """

    kubeconfig: str | None = None
    context: str | None = None
    fallback_target: str | None = None
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain: servers' certificates are verified against the
    Service's name ``SERVICE.NAMESPACE.svc.<cluster_domain>``."""
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
