"""Certificates that name the Service, not the pod: verified on both transports.

In a cluster a client connects to pod IPs while the certificate (cert-manager,
a mesh CA) names the Service. The server certificate here carries only
``greeter.default.svc.cluster.local``: the client verifies that name through a
``dns:///`` target (its host, resolved by a real dnsmasq) or through
``server_name`` with a ``static:///`` target, over HTTP/2 and HTTP/3 alike.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime import KubernetesOptions
from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY, RetryPolicy
from protoc_gen_localfirst.runtime.discovery import make_source
from protoc_gen_localfirst.runtime.http3.client import AutoChannel
from tests.support.certs import TlsFiles
from tests.support.dnsmasq import Dnsmasq
from tests.tls.conftest import NODE, SERVICE_NAME, StartServer

TRANSPORTS = ["h2", "h3", "auto"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_name_verifies_a_service_certificate_at_a_pod_address(
    start: StartServer, service_files: TlsFiles, transport: str
) -> None:
    server = await start(certfile=service_files.cert, keyfile=service_files.key, http3=True)
    async with GreeterClient(
        f"static:///{server.address}@{NODE}",
        node=NODE,
        transport=transport,  # type: ignore[arg-type]
        ca_file=service_files.ca,
        server_name=SERVICE_NAME,
    ) as client:
        reply = await client.say_hello(HelloRequest(name=transport), timeout=10)
        assert reply.message == f"Hello, {transport}!"
        if transport == "auto":  # went over HTTP/3: HTTP/2 was never opened
            channel = client.channels.active[server.address]
            assert isinstance(channel, AutoChannel) and channel._h2 is None


async def test_the_blocking_client_verifies_the_service_name(
    start: StartServer, service_files: TlsFiles
) -> None:
    server = await start(certfile=service_files.cert, keyfile=service_files.key)

    def call() -> str:  # in a thread: the server runs on this test's event loop
        with GreeterSyncClient(
            f"static:///{server.address}@{NODE}",
            node=NODE,
            ca_file=service_files.ca,
            server_name=SERVICE_NAME,
        ) as client:
            return client.say_hello(HelloRequest(name="sync"), timeout=10).message

    assert await asyncio.to_thread(call) == "Hello, sync!"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_dns_target_verifies_its_own_host_name(
    start: StartServer, service_files: TlsFiles, host: str, transport: str
) -> None:
    server = await start(certfile=service_files.cert, keyfile=service_files.key, http3=True)
    with Dnsmasq({SERVICE_NAME: [host]}, domain="cluster.local") as dns:
        async with GreeterClient(
            dns.target(SERVICE_NAME, server.port),
            node=NODE,
            transport=transport,  # type: ignore[arg-type]
            ca_file=service_files.ca,
        ) as client:
            assert client.tls is not None and client.tls.server_name == SERVICE_NAME
            reply = await client.say_hello(HelloRequest(name="dns"), timeout=10)
    assert reply.message == "Hello, dns!"


async def test_without_server_name_a_static_address_is_refused_with_the_reason(
    start: StartServer, service_files: TlsFiles
) -> None:
    server = await start(certfile=service_files.cert, keyfile=service_files.key, http3=True)
    target = f"static:///{server.address}@{NODE}"
    async with GreeterClient(target, node=NODE, transport="h3", ca_file=service_files.ca) as client:
        with pytest.raises(CallFailedError) as h3:
            await client.say_hello(HelloRequest(name="x"), timeout=10, retry=NO_RETRY)
    assert h3.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (
        f"the server's certificate names {SERVICE_NAME}, not '{server.host}': pass "
        "server_name= with a name it carries"
    ) in (h3.value.details() or "")
    # HTTP/2, with the rpc's own retry policy: the refusal is not retried as if the
    # connection might come up (until the deadline) but gets the policy's attempts,
    # and the error names it once.
    async with GreeterClient(target, node=NODE, ca_file=service_files.ca) as client:
        with pytest.raises(CallFailedError) as h2:
            await client.say_hello(HelloRequest(name="x"), timeout=30)
    assert h2.value.code() == grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED
    attempts = len(h2.value.attempts)
    assert attempts == RetryPolicy().max_attempts  # the proto's policy leaves the default
    details = h2.value.details() or ""
    assert details.count("Hostname Verification Check failed") == 1, details
    assert f"{server.address} ({NODE}), {attempts} attempts: UNAVAILABLE" in details


def test_default_server_names_by_target() -> None:
    """What certificates are verified against, from the target alone."""
    assert make_source(f"dns:///{SERVICE_NAME}:50051").server_name == SERVICE_NAME
    assert make_source(f"dns:///{SERVICE_NAME}.:50051").server_name == SERVICE_NAME
    assert make_source("dns:///127.0.0.1:50051").server_name is None  # the address itself
    assert make_source("static:///127.0.0.1:50051@a").server_name is None
    # No cluster here: a fallback target lets the source be built without API config.
    fallback = "static:///127.0.0.1:1@n"
    for options, name in (
        (KubernetesOptions(fallback_target=fallback), "greeter.prod.svc.cluster.local"),
        (
            KubernetesOptions(fallback_target=fallback, cluster_domain="corp"),
            "greeter.prod.svc.corp",
        ),
    ):
        source = make_source("kubernetes:///greeter.prod:50051", kubernetes=options)
        assert source.server_name == name
        source.close()
