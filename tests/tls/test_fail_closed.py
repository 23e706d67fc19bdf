"""TLS never degrades: no plaintext fallback, no HTTP/2 fallback on a bad certificate,
and a certificate HTTP/3 refuses is explained, not just refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY
from protoc_gen_localfirst.runtime.http3.client import AutoChannel
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from tests.support.certs import (
    CertificateAuthority,
    TlsFiles,
    self_signed_leaf,
    tls_files,  # noqa: F401
)
from tests.tls.conftest import NODE, StartServer, write

ALT_SVC_TRAILER = "localfirst-alt-svc"


def server_files(directory: Path, ca: CertificateAuthority, host: str) -> TlsFiles:
    cert, key = write(directory, "server", ca.issue([host]))
    (directory / "ca.pem").write_bytes(ca.pem)
    return TlsFiles(ca=directory / "ca.pem", cert=cert, key=key)


async def test_auto_fails_closed_on_a_certificate_it_does_not_trust(
    start: StartServer, tmp_path: Path, host: str
) -> None:
    served = server_files(tmp_path, CertificateAuthority("the server's CA"), host)
    server = await start(certfile=served.cert, keyfile=served.key, http3=True)
    other = CertificateAuthority("some other CA")
    other_ca = served.ca.with_name("other-ca.pem")
    other_ca.write_bytes(other.pem)
    async with GreeterClient(
        f"static:///{server.address}@{NODE}", node=NODE, transport="auto", ca_file=other_ca
    ) as client:
        with pytest.raises(CallFailedError) as info:
            await client.say_hello(HelloRequest(name="x"), timeout=10, retry=NO_RETRY)
        channel = client.channels.active[server.address]
        assert isinstance(channel, AutoChannel)
        assert channel._h2 is None  # never fell back to HTTP/2
        assert not channel.memory.use_h2(server.address)
    details = info.value.details() or ""
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "TLS alert 42" in details
    assert (
        f"the server's certificate is signed by CN=the server's CA, which is not in "
        f"ca_file={str(other_ca)!r}"
    ) in details


async def test_auto_never_downgrades_to_plaintext_http2(
    start: StartServer,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    plaintext = await start()  # no certfile: plaintext HTTP/2, no HTTP/3
    async with GreeterClient(
        f"static:///{plaintext.address}@{NODE}",
        node=NODE,
        transport="auto",
        ca_file=tls_files.ca,
    ) as client:
        with pytest.raises(CallFailedError) as info:
            await client.say_hello(HelloRequest(name="x"), timeout=3, retry=NO_RETRY)
        channel = client.channels.active[plaintext.address]
        assert isinstance(channel, AutoChannel)
        assert channel._h2 is not None  # it fell back to HTTP/2 (nothing on UDP)...
    details = info.value.details() or ""
    assert "WRONG_VERSION_NUMBER" in details  # ...over TLS, which a plaintext server cannot speak


async def test_a_plaintext_server_does_not_advertise_http3(start: StartServer) -> None:
    server = await start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            request_serializer=HelloRequest.SerializeToString,
            response_deserializer=lambda data: data,
        )(HelloRequest(name="x"))
        await call
        trailers = dict(await call.trailing_metadata() or ())
    assert trailers[NODE_METADATA_KEY] == NODE
    assert ALT_SVC_TRAILER not in trailers
    assert server.h3_server is None


async def test_a_self_signed_server_certificate_works_on_http2_and_is_explained_on_http3(
    start: StartServer, tmp_path: Path, host: str
) -> None:
    cert, key = write(tmp_path, "self-signed", self_signed_leaf([host]))
    server = await start(certfile=cert, keyfile=key, http3=True)
    target = f"static:///{server.address}@{NODE}"
    async with GreeterClient(target, node=NODE, ca_file=cert) as client:
        assert (await client.say_hello(HelloRequest(name="h2"), timeout=10)).message
    async with GreeterClient(target, node=NODE, transport="h3", ca_file=cert) as client:
        with pytest.raises(CallFailedError) as info:
            await client.say_hello(HelloRequest(name="h3"), timeout=10, retry=NO_RETRY)
    assert (
        "the server's certificate (CN=self-signed server) is self-signed (it is in ca_file): "
        "HTTP/3 verifies like a browser and never trusts a server certificate as its own CA. "
        "Make a CA, sign the server's certificate with it (CA:FALSE, serverAuth) and pass "
        "the CA as ca_file"
    ) in (info.value.details() or "")
