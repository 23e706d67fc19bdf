"""The server's certificate is rotated under load: new handshakes get the new one,
no call fails, connections already open keep going.

cert-manager renews by rewriting the Secret; kubelet swaps the mounted files
atomically. ``write`` replaces them the same way (a rename). Both transports
are loaded with calls on long-lived connections and with calls that each open
a new connection (a new handshake), before, during and after the swap.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime import Server
from protoc_gen_localfirst.runtime.http3.channel import H3Channel
from protoc_gen_localfirst.runtime.tls import ClientTls
from tests.support.certs import CertificateAuthority
from tests.support.waiting import wait_until_async
from tests.tls.conftest import NODE, StartServer, write


async def http2_certificate(host: str, port: int, ca: Path) -> bytes:
    """The DER certificate a new TLS (HTTP/2) connection is served."""
    return await asyncio.to_thread(_http2_certificate, host, port, ca)  # the server is on this loop


def _http2_certificate(host: str, port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


async def http3_certificate(host: str, port: int, ca: Path) -> bytes:
    """The DER certificate a new QUIC connection is served."""
    async with H3Channel(host, port, tls=ClientTls(ca_file=str(ca))) as channel:
        connection = await channel.connect(5.0)
        certificate = connection._quic.get_peercert()
        assert certificate is not None
        return bytes(certificate.public_bytes())


def der(chain: bytes) -> bytes:
    first = chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first.decode())


@dataclass
class Rotation:
    """A server on certificate ``old``, and ``new`` from the same CA to rotate to."""

    server: Server
    ca_file: Path
    cert: Path
    key: Path
    old: tuple[bytes, bytes]
    new: tuple[bytes, bytes]

    @classmethod
    async def start(
        cls, start: StartServer, directory: Path, ca: CertificateAuthority, host: str
    ) -> Rotation:
        old, new = ca.issue([host]), ca.issue([host])
        cert, key = write(directory, "server", old)
        ca_file = directory / "ca.pem"
        ca_file.write_bytes(ca.pem)
        server = await start(certfile=cert, keyfile=key, http3=True)
        return cls(server, ca_file, cert, key, old, new)


async def test_rotation_under_load_fails_no_call(
    start: StartServer, tmp_path: Path, ca: CertificateAuthority, host: str
) -> None:
    rotation = await Rotation.start(start, tmp_path, ca, host)
    server, ca_file, new = rotation.server, rotation.ca_file, rotation.new
    target = f"static:///{server.address}@{NODE}"
    stop = asyncio.Event()
    answered: dict[str, int] = {}
    failures: list[str] = []

    async def long_lived(transport: str) -> None:
        async with GreeterClient(
            target,
            node=NODE,
            transport=transport,
            ca_file=ca_file,  # type: ignore[arg-type]
        ) as client:
            while not stop.is_set():
                await call(client, f"{transport}-kept")

    async def handshake_per_call(transport: str) -> None:
        while not stop.is_set():
            async with GreeterClient(
                target,
                node=NODE,
                transport=transport,
                ca_file=ca_file,  # type: ignore[arg-type]
            ) as client:
                await call(client, f"{transport}-new")

    async def call(client: GreeterClient, kind: str) -> None:
        try:
            await client.say_hello(HelloRequest(name=kind), timeout=10)
        except grpc.RpcError as error:  # counted, shown if any
            failures.append(f"{kind}: {error!r}")
        else:
            answered[kind] = answered.get(kind, 0) + 1

    workers = [
        asyncio.ensure_future(work(transport))
        for transport in ("h2", "h3")
        for work in (long_lived, handshake_per_call)
    ]
    try:
        await wait_until_async(lambda: len(answered) == 4, what="every worker answered once")
        before = dict(answered)
        write(tmp_path, "server", new)
        new_der = der(new[0])

        async def served_new() -> bool:
            return await http2_certificate(server.host, server.port, ca_file) == new_der

        await wait_until_async(served_new, what="new HTTP/2 handshakes to get the new certificate")
        assert await http3_certificate(server.host, server.port, ca_file) == new_der
        after = dict(answered)
        await wait_until_async(
            lambda: all(answered[k] > after[k] for k in after), what="more calls after it"
        )
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    assert all(answered[kind] > before[kind] for kind in before)


async def test_a_mismatched_pair_mid_rotation_keeps_the_old_certificate(
    start: StartServer,
    tmp_path: Path,
    ca: CertificateAuthority,
    host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rotation = await Rotation.start(start, tmp_path, ca, host)
    server, ca_file, old, new = rotation.server, rotation.ca_file, rotation.old, rotation.new
    rotation.cert.write_bytes(new[0])  # the certificate changed, its key not yet
    await asyncio.sleep(1.1)  # the scenario: longer than the 1 s between looks at the files
    assert await http2_certificate(server.host, server.port, ca_file) == der(old[0])
    assert await http3_certificate(server.host, server.port, ca_file) == der(old[0])
    assert "TLS: keeping the previous certificate" in caplog.text
    assert "the private key is not the certificate's key" in caplog.text
    rotation.key.write_bytes(new[1])  # now the pair matches

    async def served_new() -> bool:
        return await http2_certificate(server.host, server.port, ca_file) == der(new[0])

    await wait_until_async(served_new, what="the new pair to be served")
