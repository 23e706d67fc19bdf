"""TLS tests: real TLS on both transports, against servers started with the bootstrap.

Certificates come from ``tests.support.certs.CertificateAuthority`` (a CA and
leaves it signs); names resolve through a real dnsmasq where a test needs DNS.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from greeter.v1.greeter_localfirst import GreeterServicer, start_server
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import Server, ServicerContext
from tests.support.certs import CertificateAuthority, TlsFiles

SERVICE_NAME = "greeter.default.svc.cluster.local"
"""What a cert-manager certificate for the Service names (and nothing else)."""

NODE = "node-tls"

_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(121, 130))


class Greeter(GreeterServicer):
    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        return HelloReply(message=f"Hello, {request.name}!", node=NODE)


@pytest.fixture
def host() -> str:
    return next(_hosts)


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def write(directory: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    """``name.pem`` and ``name.key`` in ``directory`` (replaced atomically, as kubelet does)."""
    chain, key = pair
    paths = directory / f"{name}.pem", directory / f"{name}.key"
    for path, data in zip(paths, (chain, key), strict=True):
        staged = path.with_suffix(".new")
        staged.write_bytes(data)
        staged.replace(path)
    return paths


@pytest.fixture
def service_files(tmp_path: Path, ca: CertificateAuthority) -> TlsFiles:
    """A server certificate whose only SAN is ``SERVICE_NAME`` (no IP address)."""
    cert, key = write(tmp_path, "server", ca.issue([SERVICE_NAME]))
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    return TlsFiles(ca=tmp_path / "ca.pem", cert=cert, key=key)


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start(host: str) -> AsyncIterator[StartServer]:
    """``await start(certfile=..., keyfile=..., **options)``: stopped at teardown."""
    servers: list[Server] = []

    async def _start(**options: Any) -> Server:
        options.setdefault("host", host)
        options.setdefault("port", 0)
        options.setdefault("node", NODE)
        options.setdefault("drain_delay", 0.0)
        options.setdefault("grace", 0.5)
        server = await start_server(Greeter(), **options)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(0)
