"""Endpoints and gRPC-style targets (``static:///``, later ``dns:///``, ``kubernetes:///``).

Pure parsing, no I/O. A target follows gRPC's naming doc: ``scheme://authority/endpoint``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class TargetError(ValueError):
    """A target string that cannot be used; the message says what is wrong and how it should look."""


STATIC_FORMAT = "static:///IP:PORT@NODE[/ZONE],IP:PORT@NODE[/ZONE],..."
TARGET_FORMATS = (
    "dns:///NAME:PORT, dns://DNS_IP[:DNS_PORT]/NAME:PORT, "
    "kubernetes:///SERVICE.NAMESPACE:PORT or " + STATIC_FORMAT
)
SUPPORTED_SCHEMES = ("static", "dns", "kubernetes")


@dataclass(frozen=True)
class Endpoint:
    """One replica: where it listens and where it runs."""

    host: str
    port: int
    node: str | None = None
    zone: str | None = None
    ready: bool = True

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def channel_target(self) -> str:
        """The grpc target for a channel to exactly this address (no resolver involved)."""
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return f"dns:///{self.address}"
        return f"ipv{ip.version}:{self.address}"

    def describe(self) -> str:
        where = self.node or "unknown node"
        if self.zone:
            where = f"{where}, {self.zone}"
        return f"{self.address} ({where})"


@dataclass(frozen=True)
class Target:
    """A parsed target: ``scheme://authority/path``."""

    scheme: str
    authority: str
    path: str
    text: str


def parse_target(text: str) -> Target:
    """Split a target into scheme, authority and path; reject unknown schemes."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise TargetError(f"target {text!r} has no scheme; use {TARGET_FORMATS}")
    authority, slash, path = rest.partition("/")
    if not slash:
        raise TargetError(f"target {text!r} has no path after the authority; use {TARGET_FORMATS}")
    if scheme not in SUPPORTED_SCHEMES:
        raise TargetError(
            f"target {text!r}: scheme {scheme!r} is not supported; "
            f"supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
        )
    return Target(scheme=scheme, authority=authority, path=path, text=text)


def parse_host_port(text: str, *, context: str) -> tuple[str, int]:
    """``1.2.3.4:50051`` or ``[::1]:50051`` -> (host, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise TargetError(f"{context}: {text!r} is not [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise TargetError(f"{context}: {text!r} has no port (expected HOST:PORT)")
        if ":" in host:
            raise TargetError(f"{context}: IPv6 address in {text!r} needs brackets: [{host}]:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"{context}: port {port_text!r} in {text!r} is not a number in 1-65535")
    return host, int(port_text)


def parse_static(target: Target) -> list[Endpoint]:
    """Endpoints of a ``static:///ip:port@node[/zone],...`` target."""
    if target.authority:
        raise TargetError(
            f"target {target.text!r}: static targets take no authority; use {STATIC_FORMAT}"
        )
    endpoints: list[Endpoint] = []
    for item in target.path.split(","):
        item = item.strip()
        if not item:
            raise TargetError(f"target {target.text!r} has an empty endpoint; use {STATIC_FORMAT}")
        address, _, placement = item.partition("@")
        node, _, zone = placement.partition("/")
        host, port = parse_host_port(address, context=f"target {target.text!r}")
        endpoints.append(Endpoint(host=host, port=port, node=node or None, zone=zone or None))
    addresses = [e.address for e in endpoints]
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise TargetError(f"target {target.text!r} lists {', '.join(duplicates)} more than once")
    return endpoints
