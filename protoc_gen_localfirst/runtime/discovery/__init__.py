"""Endpoint discovery: targets, and sources (static, DNS, Kubernetes) that keep them fresh.

``make_source`` picks the source by the target's scheme; the DNS and Kubernetes
sources are imported only when a target needs them (dnspython, kubernetes).
"""

from __future__ import annotations

from protoc_gen_localfirst.runtime.discovery.endpoints import parse_target
from protoc_gen_localfirst.runtime.discovery.source import (
    DiscoveryError,
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
    Listener,
)
from protoc_gen_localfirst.runtime.discovery.static import StaticSource

__all__ = [
    "DiscoveryError",
    "DnsOptions",
    "EndpointSource",
    "KubernetesOptions",
    "Listener",
    "StaticSource",
    "make_source",
]


def make_source(
    target: str,
    *,
    dns: DnsOptions | None = None,
    kubernetes: KubernetesOptions | None = None,
) -> EndpointSource:
    """The source for ``target``, chosen by its scheme."""
    parsed = parse_target(target)
    if parsed.scheme == "static":
        return StaticSource(parsed)
    if parsed.scheme == "dns":
        from protoc_gen_localfirst.runtime.discovery.dns import DnsSource

        return DnsSource(parsed, dns or DnsOptions())
    if parsed.scheme == "kubernetes":
        from protoc_gen_localfirst.runtime.discovery.kubernetes import KubernetesSource

        return KubernetesSource(
            parsed,
            kubernetes or KubernetesOptions(),
            dns=dns or DnsOptions(),
            make_fallback=lambda fallback: make_source(fallback, dns=dns),
        )
    raise AssertionError(f"parse_target accepted unknown scheme {parsed.scheme!r}")
