"""Transport choice, connection failures and the ``auto`` fallback to HTTP/2."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import NO_RETRY
from protoc_gen_localfirst.runtime.http3.client import (
    AutoChannel,
    H3Channel,
    H3Options,
    TransportMemory,
)
from protoc_gen_localfirst.runtime.http3.connection import H3ClientProtocol
from protoc_gen_localfirst.runtime.tls import ClientTls
from tests.http3.client.conftest import NODE, Greeter, StartServer
from tests.support.certs import TlsFiles


def test_sync_client_refuses_http3_at_construction() -> None:
    with pytest.raises(ValueError, match="HTTP/3 needs the asyncio client"):
        GreeterSyncClient("static:///127.0.0.1:1@n", transport="h3")


async def test_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="supported: auto, h2, h3"):
        GreeterClient("static:///127.0.0.1:1@n", transport="quic")  # type: ignore[arg-type]


@pytest.fixture
def silent_udp() -> Iterator[tuple[str, int]]:
    """A UDP port that receives and never answers (like a firewall dropping QUIC)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.58", 0))
        yield "127.0.0.58", sock.getsockname()[1]


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def test_nothing_on_udp_is_unavailable_within_a_round_trip(tls_files: TlsFiles) -> None:
    port = free_udp_port("127.0.0.57")
    options = H3Options(connect_timeout=5.0)
    async with H3Channel(
        "127.0.0.57", port, tls=ClientTls(ca_file=str(tls_files.ca)), options=options
    ) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary("/greeter.v1.Greeter/SayHello")(b"", timeout=5)
        took = time.monotonic() - started
        assert channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "refused" in (failure.value.details() or "").lower()
    # Not a timing target: it shows the ICMP refusal ended the attempt, not the 5 s timeout.
    assert took < 2.5


async def test_silent_udp_is_unavailable_after_the_connect_timeout(
    silent_udp: tuple[str, int], tls_files: TlsFiles
) -> None:
    host, port = silent_udp
    options = H3Options(connect_timeout=0.3)
    async with H3Channel(
        host, port, tls=ClientTls(ca_file=str(tls_files.ca)), options=options
    ) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary("/greeter.v1.Greeter/SayHello")(b"", timeout=5)
        took = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no QUIC handshake" in (failure.value.details() or "")
    # It waited for the connect timeout (0.3 s), and gave up long before the call's 5 s.
    assert 0.25 < took < 2.5


async def test_silent_udp_with_a_shorter_deadline_is_deadline_exceeded(
    silent_udp: tuple[str, int], tls_files: TlsFiles
) -> None:
    host, port = silent_udp
    async with H3Channel(host, port, tls=ClientTls(ca_file=str(tls_files.ca))) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary("/greeter.v1.Greeter/SayHello")(b"", timeout=0.2)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_transport_memory_forgets_after_its_ttl() -> None:
    now = [100.0]
    memory = TransportMemory(clock=lambda: now[0])
    assert not memory.use_h2("a:1")
    memory.h3_failed("a:1", 5.0, "refused")
    assert memory.use_h2("a:1") and not memory.use_h2("b:1")
    now[0] += 5.0
    assert not memory.use_h2("a:1")


def auto_channel(client: GreeterClient, address: str) -> AutoChannel:
    channel = client.channels.active[address]
    assert isinstance(channel, AutoChannel)
    return channel


async def test_auto_uses_http3_when_the_server_offers_it(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles
) -> None:
    server = await start(greeter)
    target = f"static:///{server.address}@{NODE}"
    async with GreeterClient(
        target,
        node=NODE,
        transport="auto",
        ca_file=str(tls_files.ca),
        probe_nodes=False,
    ) as client:
        await client.say_hello(HelloRequest(name="a"), timeout=5)
        channel = auto_channel(client, server.address)
        assert channel.h3.get_state() == grpc.ChannelConnectivity.READY
        assert channel._h2 is None  # HTTP/2 never opened
        assert not channel.memory.use_h2(server.address)


async def test_auto_falls_back_to_http2_remembers_and_retries_http3_later(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles
) -> None:
    h2_only = await start(greeter, http3=False)  # TCP served, nothing on UDP
    target = f"static:///{h2_only.address}@{NODE}"
    options = H3Options(fallback_ttl=1.0, connect_timeout=5.0)
    async with GreeterClient(
        target,
        node=NODE,
        transport="auto",
        ca_file=str(tls_files.ca),
        h3_options=options,
        probe_nodes=False,
    ) as client:
        started = time.monotonic()
        first = await client.say_hello(HelloRequest(name="one"), timeout=5, retry=NO_RETRY)
        fallback_took = time.monotonic() - started
        channel = auto_channel(client, h2_only.address)
        assert channel.memory.use_h2(h2_only.address)
        assert "refused" in channel.memory.reasons[h2_only.address].lower()

        attempts = 0
        connect = channel.h3.connect

        async def counting_connect(timeout: float | None = None) -> H3ClientProtocol:
            nonlocal attempts
            attempts += 1
            return await connect(timeout)

        channel.h3.connect = counting_connect  # type: ignore[method-assign]
        replies = [
            await client.say_hello(HelloRequest(name=str(i)), timeout=5, retry=NO_RETRY)
            for i in range(20)
        ]
        assert attempts == 0  # remembered: no new handshake attempts
        assert all(isinstance(r, HelloReply) for r in replies)

        # HTTP/3 gets enabled at the same address: picked up once the memory expires.
        await h2_only.stop(0)
        both = await start(greeter, host=h2_only.host, port=h2_only.port)
        await asyncio.sleep(options.fallback_ttl)
        await client.say_hello(HelloRequest(name="two"), timeout=5, retry=NO_RETRY)
        assert attempts > 0  # tried HTTP/3 again
        assert channel.h3.get_state() == grpc.ChannelConnectivity.READY
        assert not channel.memory.use_h2(both.address)
    assert first.message == "Hello, one!"
    # ICMP "port unreachable" ended the attempt, not the 5 s connect timeout.
    assert fallback_took < 2.5
