"""Message size limits over HTTP/3, both ways, with real servers and our client.

Every message over a limit ends its call at once with RESOURCE_EXHAUSTED,
worded as grpc words it (``SERVER: Received message larger than max (N vs.
M)``, N the serialized message), with or without a deadline; afterwards
neither side holds anything for the call (the server's call table and
HTTP/3 stream state, the client's calls, HTTP/3 and QUIC streams) and the
same connection serves the next call. Without a deadline the pytest timeout
is the guard: the answer must come by itself.

How fast the answers come is measured outside the tests (no timing asserts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import Server, ServicerContext
from protoc_gen_localfirst.runtime.http3.client import H3Channel
from protoc_gen_localfirst.runtime.http3.connection import H3ClientProtocol
from protoc_gen_localfirst.runtime.tls import ClientTls
from protoc_gen_localfirst.runtime.wire import DEFAULT_MAX_MESSAGE_SIZE
from tests.http3.client.conftest import NODE, Greeter, StartServer
from tests.support.certs import TlsFiles
from tests.support.waiting import wait_until_async

GREETER = "/greeter.v1.Greeter/"
BIG = 4608 * 1024  # 4.5 MiB of name: a HelloRequest of BIG + 5 bytes
BIG_REQUEST = BIG + 5
NOTHING_HELD = {"calls": 0, "http3": 0}

pytestmark = pytest.mark.timeout(60)  # the guard for calls without a deadline

DEADLINES = pytest.mark.parametrize("timeout", [10.0, None], ids=["deadline", "no-deadline"])


class BigReplies(Greeter):
    """``LotsOfReplies`` with ``size:<n>``: a small reply, then one of ``n`` bytes."""

    async def LotsOfReplies(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> AsyncIterator[HelloReply]:
        kind, _, arg = request.name.partition(":")
        if kind != "size":
            async for reply in super().LotsOfReplies(request, context):
                yield reply
            return
        yield HelloReply(message="small", node=NODE)
        yield HelloReply(message="x" * int(arg), node=NODE)


def channel_to(server: Server, tls: TlsFiles, **channel_options: int) -> H3Channel:
    return H3Channel(
        server.host,
        server.port,
        tls=ClientTls(ca_file=str(tls.ca)),
        channel_options=[(f"grpc.{key}", value) for key, value in channel_options.items()],
    )


def say_hello(channel: H3Channel) -> Any:
    return channel.unary_unary(
        GREETER + "SayHello", HelloRequest.SerializeToString, HelloReply.FromString
    )


def greetings(channel: H3Channel) -> Any:
    return channel.stream_unary(
        GREETER + "LotsOfGreetings", HelloRequest.SerializeToString, HelloReply.FromString
    )


def replies(channel: H3Channel) -> Any:
    return channel.unary_stream(
        GREETER + "LotsOfReplies", HelloRequest.SerializeToString, HelloReply.FromString
    )


def connection_of(channel: H3Channel) -> H3ClientProtocol:
    connection = channel._connection
    assert connection is not None and connection.usable
    return connection


def server_held(server: Server) -> list[dict[str, int]]:
    assert server.h3_server is not None
    return [conn.held_streams for conn in server.h3_server.connections]


async def assert_nothing_held(server: Server, channel: H3Channel) -> None:
    """Both sides let go of every finished call (after the peers' resets arrive)."""
    connection = connection_of(channel)
    await wait_until_async(
        lambda: server_held(server) == [NOTHING_HELD],
        what="the server to hold no call or stream state",
    )
    await wait_until_async(
        lambda: (
            (len(channel.calls), connection.held_streams)
            == (0, {"calls": 0, "http3": 0, "quic": 0})
        ),
        what="the client to hold no call or stream",
    )


async def still_works(channel: H3Channel, connection: H3ClientProtocol) -> None:
    """The same connection serves the next call."""
    reply = await say_hello(channel)(HelloRequest(name="after"), timeout=10)
    assert reply.message == "Hello, after!"
    assert connection_of(channel) is connection


async def failure_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


# --- requests over the server's limit ------------------------------------------


@DEADLINES
async def test_unary_request_over_the_server_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(Greeter())
    async with channel_to(server, tls_files) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        # another call on the connection, in flight meanwhile
        slow = say_hello(channel)(HelloRequest(name="sleep:0.3"), timeout=10)
        error = await failure_of(say_hello(channel)(HelloRequest(name="x" * BIG), timeout=timeout))
        assert (await slow).message == "Hello, sleep:0.3!"
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == (
        f"SERVER: Received message larger than max ({BIG_REQUEST} vs. {DEFAULT_MAX_MESSAGE_SIZE})"
    )


@DEADLINES
async def test_streamed_request_over_the_server_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    async def requests() -> AsyncIterator[HelloRequest]:
        yield HelloRequest(name="small")
        yield HelloRequest(name="x" * BIG)
        await asyncio.Event().wait()  # the request never ends by itself

    server = await start(Greeter())
    async with channel_to(server, tls_files) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        error = await failure_of(greetings(channel)(requests(), timeout=timeout))
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == (
        f"SERVER: Received message larger than max ({BIG_REQUEST} vs. {DEFAULT_MAX_MESSAGE_SIZE})"
    )


@pytest.mark.parametrize("quic_library", ["qh3", "aioquic"])
async def test_more_refused_requests_than_the_stream_limit_on_one_connection(
    start: StartServer, tls_files: TlsFiles, quic_library: str
) -> None:
    """Each refused request's stream closes, so the server's stream credit comes back.

    The server allows 100 (qh3) or 128 (aioquic) concurrent request streams
    per connection; streams left half-open would use them up and the next
    call would wait forever.
    """

    async def requests() -> AsyncIterator[HelloRequest]:
        yield HelloRequest(name="x" * 2000)
        await asyncio.Event().wait()

    server = await start(Greeter(), max_message_size=1000, quic_library=quic_library)
    async with channel_to(server, tls_files) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        codes = set()
        for _ in range(250):
            codes.add((await failure_of(greetings(channel)(requests()))).code())
        await still_works(channel, connection)
        await assert_nothing_held(server, channel)
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}


@DEADLINES
async def test_generated_client_request_over_the_server_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(Greeter())
    target = f"static:///{server.address}@{NODE}"
    async with GreeterClient(
        target,
        node=NODE,
        probe_nodes=False,
        transport="h3",
        ca_file=str(tls_files.ca),
    ) as client:
        with pytest.raises(grpc.RpcError) as failure:
            await client.say_hello(HelloRequest(name="x" * BIG), timeout=timeout)
        reply = await client.say_hello(HelloRequest(name="after"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"Received message larger than max ({BIG_REQUEST} vs." in str(failure.value.details())
    assert reply.message == "Hello, after!"
    assert server.h3_server is not None
    await wait_until_async(
        lambda: server.h3_server is not None and server.h3_server.calls_in_flight == 0,
        what="the server's call table to empty",
    )


# --- responses over a limit ------------------------------------------------------


@DEADLINES
async def test_unary_response_over_the_server_send_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(Greeter())
    async with channel_to(server, tls_files) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        error = await failure_of(
            say_hello(channel)(HelloRequest(name="size:5000000"), timeout=timeout)
        )
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # 5000000 bytes of message + the node field, as grpc's own message filter words it
    assert error.details() == (
        f"SERVER: Sent message larger than max (5000014 vs. {DEFAULT_MAX_MESSAGE_SIZE})"
    )


@DEADLINES
async def test_streamed_response_over_the_server_send_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(BigReplies(), max_message_size=100_000)
    async with channel_to(server, tls_files) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        call = replies(channel)(HelloRequest(name="size:200000"), timeout=timeout)
        first = await call.read()
        error = await failure_of(call.read())
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert first.message == "small"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "SERVER: Sent message larger than max (200013 vs. 100000)"


@DEADLINES
async def test_unary_response_over_the_client_receive_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(Greeter())
    async with channel_to(server, tls_files, max_receive_message_length=1_000_000) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        error = await failure_of(
            say_hello(channel)(HelloRequest(name="size:2000000"), timeout=timeout)
        )
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "CLIENT: Received message larger than max (2000013 vs. 1000000)"


@DEADLINES
async def test_streamed_response_over_the_client_receive_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(BigReplies())
    async with channel_to(server, tls_files, max_receive_message_length=100_000) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        call = replies(channel)(HelloRequest(name="size:200000"), timeout=timeout)
        first = await call.read()
        error = await failure_of(call.read())
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert first.message == "small"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "CLIENT: Received message larger than max (200013 vs. 100000)"


# --- requests over the client's own send limit --------------------------------


@DEADLINES
async def test_unary_request_over_the_client_send_limit_is_never_sent(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    server = await start(Greeter())
    async with channel_to(server, tls_files, max_send_message_length=1_000_000) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        next_stream = connection._quic.get_next_available_stream_id()
        error = await failure_of(
            say_hello(channel)(HelloRequest(name="x" * 2_000_000), timeout=timeout)
        )
        assert connection._quic.get_next_available_stream_id() == next_stream  # no stream opened
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "CLIENT: Sent message larger than max (2000004 vs. 1000000)"


async def test_request_over_the_client_send_limit_needs_no_server(tls_files: TlsFiles) -> None:
    """Refused before connecting: RESOURCE_EXHAUSTED, not UNAVAILABLE, with nobody listening."""
    options = [("grpc.max_send_message_length", 10)]
    async with H3Channel(
        "127.0.0.1", 9, tls=ClientTls(ca_file=str(tls_files.ca)), channel_options=options
    ) as channel:
        error = await failure_of(say_hello(channel)(HelloRequest(name="x" * 20)))
        assert channel._connection is None
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "CLIENT: Sent message larger than max (22 vs. 10)"


@DEADLINES
async def test_streamed_request_over_the_client_send_limit(
    start: StartServer, tls_files: TlsFiles, timeout: float | None
) -> None:
    def requests() -> Iterator[HelloRequest]:
        yield HelloRequest(name="small")
        yield HelloRequest(name="x" * 2_000_000)
        yield HelloRequest(name="never sent")

    server = await start(Greeter())
    async with channel_to(server, tls_files, max_send_message_length=1_000_000) as channel:
        await say_hello(channel)(HelloRequest(name="warm"), timeout=10)
        connection = connection_of(channel)
        error = await failure_of(greetings(channel)(requests(), timeout=timeout))
        await assert_nothing_held(server, channel)
        await still_works(channel, connection)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "CLIENT: Sent message larger than max (2000004 vs. 1000000)"
