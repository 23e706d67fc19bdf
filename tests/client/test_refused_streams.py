"""HTTP/2 REFUSED_STREAM: a server at its concurrent-stream limit refuses streams a
client opened before it saw SETTINGS_MAX_CONCURRENT_STREAMS. The stream was not
processed (RFC 9113 8.7): our client retries it transparently, on the same replica,
without ejecting it. Plain grpc.aio surfaces the refusals as failed calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterServicer, start_server
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import Server, ServicerContext
from protoc_gen_localfirst.runtime.client.failures import REFUSED_STREAM, Failure

BURST = 40


class SlowGreeter(GreeterServicer):
    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        await asyncio.sleep(0.05)  # the scenario: calls overlap, so the limit is reached
        return HelloReply(message=f"Hello, {request.name}!", node="node-a")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    started = await start_server(
        SlowGreeter(), host="127.0.0.1", port=0, node="node-a", max_concurrent_streams=2
    )
    yield started
    await started.stop(0)


async def test_plain_grpc_fails_refused_streams_of_a_cold_burst(server: Server) -> None:
    """What the server does: the premise of the test below."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        say = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            HelloRequest.SerializeToString,
            HelloReply.FromString,
        )
        results = await asyncio.gather(
            *(say(HelloRequest(name=str(i)), timeout=10) for i in range(BURST)),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert refused, "no stream was refused: the scenario did not happen"
    assert all(REFUSED_STREAM in (r.details() or "") for r in refused)
    assert all(Failure.of(r).refused_stream and Failure.of(r).not_sent for r in refused)


async def test_our_client_retries_refused_streams_transparently(server: Server) -> None:
    async with GreeterClient(f"static:///127.0.0.1:{server.port}@node-a", node="node-a") as client:
        replies = await asyncio.gather(
            *(client.say_hello(HelloRequest(name=str(i)), timeout=10) for i in range(BURST))
        )
        assert [r.message for r in replies] == [f"Hello, {i}!" for i in range(BURST)]
        assert client.stats.ejections == 0  # busy, not broken
        assert client.stats.calls == BURST
