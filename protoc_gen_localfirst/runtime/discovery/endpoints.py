"""Endpoints and gRPC-style targets (``static:///``, later ``dns:///``, ``kubernetes:///``).

Pure parsing, no I/O. A target follows gRPC's naming doc: ``scheme://authority/endpoint``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cached_property


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

    @cached_property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets (worked out once: every call uses it)."""
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


GRPC_ADDRESS_SCHEMES = ("ipv4", "ipv6")
"""grpc's own address schemes (``ipv4:IP:PORT,...``): a ``static:///`` target says the same plus nodes."""

_BARE_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)


def parse_target(text: str) -> Target:
    """Split a target into scheme, authority and path; reject unknown schemes."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise TargetError(_without_slashes(text))
    authority, slash, path = rest.partition("/")
    if not slash:
        raise TargetError(f"target {text!r} has no path after the authority; use {TARGET_FORMATS}")
    if scheme not in SUPPORTED_SCHEMES:
        raise TargetError(
            f"target {text!r}: scheme {scheme!r} is not supported; "
            f"supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
        )
    return Target(scheme=scheme, authority=authority, path=path, text=text)


def _without_slashes(text: str) -> str:
    """Why a target without ``://`` cannot be used, and what to write instead."""
    where = f"target {text!r}"
    match = _BARE_SCHEME.fullmatch(text)
    if match is None or match.group(2).isdigit():
        # "10.0.0.1:50051", "greeter:50051": an address with no scheme at all.
        host, colon, port = text.rpartition(":")
        if colon and port.isdigit() and _is_ip(host.strip("[]")):
            suggestion = f"for a fixed address write static:///{text}@NODE; "
        elif colon and port.isdigit() and host:
            suggestion = f"for a DNS name write dns:///{text}; "
        else:
            suggestion = ""
        return f"{where} has no scheme; {suggestion}use {TARGET_FORMATS}"
    scheme, rest = match.group(1), match.group(2)
    if scheme.lower() in GRPC_ADDRESS_SCHEMES:
        static = ",".join(f"{address.strip()}@NODE" for address in rest.split(","))
        return (
            f"{where}: grpc's {scheme}: scheme is not supported here (it names no nodes); "
            f"write static:///{static} (NODE: the node each replica runs on); "
            f"use {STATIC_FORMAT}"
        )
    if scheme in SUPPORTED_SCHEMES:
        return f"{where}: write the scheme with '://': {scheme}:///{rest.lstrip('/')}"
    return (
        f"{where}: scheme {scheme!r} is not supported (and needs '://'); "
        f"supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
    )


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
            if _is_ip(host):
                raise TargetError(
                    f"{context}: IPv6 address in {text!r} needs brackets: [{host}]:PORT"
                )
            raise TargetError(
                f"{context}: {host!r} in {text!r} is not a host (expected one HOST:PORT, "
                "IPv6 as [ADDRESS]:PORT)"
            )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"{context}: port {port_text!r} in {text!r} is not a number in 1-65535")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_static(target: Target) -> list[Endpoint]:
    """Endpoints of a ``static:///ip:port@node[/zone],...`` target."""
    where = f"target {target.text!r}"
    if target.authority:
        raise TargetError(f"{where}: static targets take no authority; use {STATIC_FORMAT}")
    if ";" in target.path:
        raise TargetError(f"{where}: separate endpoints with ',', not ';'; use {STATIC_FORMAT}")
    endpoints: list[Endpoint] = []
    for item in target.path.split(","):
        item = item.strip()
        if not item:
            raise TargetError(f"{where} has an empty endpoint; use {STATIC_FORMAT}")
        address, at, placement = item.partition("@")
        node, slash, zone = placement.partition("/")
        if at and not node:
            raise TargetError(
                f"{where}: {item!r} has '@' but no node name after it; write IP:PORT@NODE, "
                "or IP:PORT alone when the node is unknown"
            )
        if slash and not zone:
            raise TargetError(
                f"{where}: {item!r} has '/' but no zone name after it; write "
                "IP:PORT@NODE/ZONE, or IP:PORT@NODE"
            )
        host, port = parse_host_port(address, context=where)
        if not _is_ip(host):
            raise TargetError(
                f"{where}: {host!r} is not an IP address; static targets take IP addresses "
                f"(for a DNS name write dns:///{address}); use {STATIC_FORMAT}"
            )
        endpoints.append(Endpoint(host=host, port=port, node=node or None, zone=zone or None))
    addresses = [e.address for e in endpoints]
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise TargetError(f"{where} lists {', '.join(duplicates)} more than once")
    return endpoints
