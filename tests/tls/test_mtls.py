"""mTLS: the server requires a client certificate its ``client_ca_file`` signed.

HTTP/2 enforces it. HTTP/3 cannot (neither QUIC library verifies client
certificates), so ``serve`` refuses ``client_ca_file`` with ``http3=True``
rather than serving HTTP/3 clients without a certificate.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY
from tests.support.certs import CertificateAuthority
from tests.tls.conftest import NODE, StartServer, write


@pytest.fixture
def mtls(tmp_path: Path, ca: CertificateAuthority, host: str) -> dict[str, Path]:
    """Server files, the CA, and client certificates from this CA and from another."""
    server_cert, server_key = write(tmp_path, "server", ca.issue([host]))
    client_cert, client_key = write(tmp_path, "client", ca.issue(client=True, common_name="c1"))
    stranger = CertificateAuthority("a stranger's CA").issue(client=True, common_name="c2")
    stranger_cert, stranger_key = write(tmp_path, "stranger", stranger)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    return {
        "ca": tmp_path / "ca.pem",
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
        "stranger_cert": stranger_cert,
        "stranger_key": stranger_key,
    }


async def test_a_client_certificate_the_ca_signed_is_served(
    start: StartServer, mtls: dict[str, Path]
) -> None:
    server = await start(
        certfile=mtls["server_cert"], keyfile=mtls["server_key"], client_ca_file=mtls["ca"]
    )
    async with GreeterClient(
        f"static:///{server.address}@{NODE}",
        node=NODE,
        ca_file=mtls["ca"],
        certfile=mtls["client_cert"],
        keyfile=mtls["client_key"],
    ) as client:
        reply = await client.say_hello(HelloRequest(name="mtls"), timeout=10)
    assert reply.message == "Hello, mtls!"


@pytest.mark.parametrize("certificate", ["none", "stranger"])
async def test_no_client_certificate_or_a_foreign_one_is_refused(
    start: StartServer, mtls: dict[str, Path], certificate: str
) -> None:
    server = await start(
        certfile=mtls["server_cert"], keyfile=mtls["server_key"], client_ca_file=mtls["ca"]
    )
    files = (
        {"certfile": mtls["stranger_cert"], "keyfile": mtls["stranger_key"]}
        if certificate == "stranger"
        else {}
    )
    async with GreeterClient(
        f"static:///{server.address}@{NODE}", node=NODE, ca_file=mtls["ca"], **files
    ) as client:
        with pytest.raises(CallFailedError) as info:
            await client.say_hello(HelloRequest(name="x"), timeout=2, retry=NO_RETRY)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "failed to connect" in (info.value.details() or "")  # never got as far as a call


async def test_http3_with_client_certificates_is_refused_by_serve(
    start: StartServer, mtls: dict[str, Path]
) -> None:
    with pytest.raises(ValueError, match="HTTP/3 cannot require client certificates"):
        await start(
            certfile=mtls["server_cert"],
            keyfile=mtls["server_key"],
            client_ca_file=mtls["ca"],
            http3=True,
        )
