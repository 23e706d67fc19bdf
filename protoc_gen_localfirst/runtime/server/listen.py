"""Listening addresses: ``host:port`` formatting, the TCP port, and why binding failed."""

from __future__ import annotations

import errno
import ipaddress
import socket

import grpc
import grpc.aio

__all__ = ["BindError", "add_port", "bind_reason", "format_address"]


class BindError(OSError):
    """The server could not listen on the address it was given."""


def format_address(host: str, port: int) -> str:
    if host.startswith("["):
        return f"{host}:{port}"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def bind_reason(host: str, port: int) -> str:
    """Why binding probably failed, found by trying a plain socket there."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        return f"cannot resolve {bare!r}: {error}"
    for family, type_, proto, _, sockaddr in infos:
        with socket.socket(family, type_, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "address already in use"
                if error.errno == errno.EADDRNOTAVAIL:
                    return "address not available on this machine"
                return error.strerror or str(error)
    return "grpc could not bind (set GRPC_VERBOSITY=debug for details)"


def add_port(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    """Listen on TCP ``host:port`` (TLS with ``credentials``); the port bound, or ``BindError``."""
    address = format_address(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {address}: {bind_reason(host, port)}") from error
    if bound == 0:  # older grpc versions report failure this way
        raise BindError(f"cannot listen on {address}: {bind_reason(host, port)}")
    return bound
