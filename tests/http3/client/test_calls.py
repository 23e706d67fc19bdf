"""The HTTP/3 transport against the real bootstrap (``http3=True``): every kind, errors, TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import cast

import grpc
import grpc.aio
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import NO_RETRY, CallFailedError, Server
from protoc_gen_localfirst.runtime.http3.client import H3Channel
from protoc_gen_localfirst.runtime.tls import ClientTls
from tests.http3.client.conftest import NODE, Greeter
from tests.support.certs import TlsFiles, make_tls_files


def target(server: Server) -> str:
    return f"static:///{server.address}@{NODE}"


def h3_client(server: Server, tls: TlsFiles, **options: object) -> GreeterClient:
    options.setdefault("transport", "h3")
    options.setdefault("ca_file", str(tls.ca))
    return GreeterClient(target(server), node=NODE, probe_nodes=False, **options)  # type: ignore[arg-type]


def h3_channel(client: GreeterClient, server: Server) -> H3Channel:
    channel = client.channels.active[server.address]
    assert isinstance(channel, H3Channel)
    return channel


async def test_every_kind_of_call(server: Server, tls_files: TlsFiles) -> None:
    async with h3_client(server, tls_files) as client:
        unary = await client.say_hello(HelloRequest(name="u"), timeout=5)
        stream = [r.message async for r in client.lots_of_replies(HelloRequest(name="s", count=3))]
        total = await client.lots_of_greetings(HelloRequest(name=n) for n in ["ab", "c"])
        bidi = [r.message async for r in client.bidi_hello(HelloRequest(name=n) for n in "pq")]
        assert h3_channel(client, server).get_state() == grpc.ChannelConnectivity.READY
    assert unary.message == "Hello, u!" and unary.replica == "h3"
    assert stream == ["s 0", "s 1", "s 2"]
    assert total.message == "2:3"
    assert bidi == ["Hello, p!", "Hello, q!"]


async def test_async_request_stream_and_many_calls_share_one_connection(
    server: Server, tls_files: TlsFiles
) -> None:
    async def names() -> object:
        for name in ["x", "yy", "zzz"]:
            await asyncio.sleep(0)
            yield HelloRequest(name=name)

    async with h3_client(server, tls_files) as client:
        replies = await asyncio.gather(
            *(client.say_hello(HelloRequest(name=str(i)), timeout=5) for i in range(50))
        )
        total = await client.lots_of_greetings(names())  # type: ignore[arg-type]
        channel = h3_channel(client, server)
        assert channel._connection is not None
        first = channel._connection
        await client.say_hello(HelloRequest(name="again"), timeout=5)
        assert channel._connection is first
    assert [r.message for r in replies] == [f"Hello, {i}!" for i in range(50)]
    assert total.message == "3:6"


async def test_metadata_and_binary_metadata_round_trip(server: Server, tls_files: TlsFiles) -> None:
    channel = H3Channel(server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca)))
    async with channel:
        say = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            HelloRequest.SerializeToString,
            HelloReply.FromString,
        )
        sent = (("x-text", "plain value"), ("x-blob-bin", b"\x00\xff\x10binary"))
        call = say(HelloRequest(name="echo-metadata"), timeout=5, metadata=sent)
        reply = await call
        initial = await call.initial_metadata()
        trailing = await call.trailing_metadata()
    assert reply.node == NODE
    for key, value in sent:
        assert initial.get_all(key) == [value]
        assert trailing.get_all(key) == [value]
    assert await call.code() == grpc.StatusCode.OK


async def test_deadline_expires_with_deadline_exceeded(server: Server, tls_files: TlsFiles) -> None:
    async with h3_client(server, tls_files) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            await client.say_hello(HelloRequest(name="sleep:3"), timeout=0.3, retry=NO_RETRY)
        took = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Ended by the 0.3 s deadline, not by the handler's 3 s sleep.
    assert 0.25 < took < 2.5


async def test_cancel_mid_stream_cancels_the_server_handler(
    server: Server, greeter: Greeter, tls_files: TlsFiles
) -> None:
    async with h3_client(server, tls_files) as client:
        stream = cast(
            AsyncGenerator[HelloReply, None],
            client.lots_of_replies(HelloRequest(name="forever")),
        )
        received = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # the runtime cancels the call: RESET_STREAM + STOP_SENDING
        await asyncio.wait_for(greeter.cancelled.wait(), 5)
    assert [r.message for r in received] == ["0", "1", "2"]


async def test_large_messages_and_a_long_stream(server: Server, tls_files: TlsFiles) -> None:
    big = 4_000_000
    async with h3_client(server, tls_files) as client:
        reply = await client.say_hello(HelloRequest(name=f"size:{big}"), timeout=20)
        total = await client.lots_of_greetings(
            (HelloRequest(name="y" * big) for _ in range(3)), timeout=20
        )
        count = 0
        async for _ in client.lots_of_replies(HelloRequest(name="n", count=5000), timeout=20):
            count += 1
        echoed = [
            r.message
            async for r in client.bidi_hello(HelloRequest(name=str(i)) for i in range(1000))
        ]
    assert len(reply.message) == big
    assert total.message == f"3:{3 * big}"
    assert count == 5000
    assert echoed == [f"Hello, {i}!" for i in range(1000)]


async def test_response_over_the_receive_limit_is_resource_exhausted(
    server: Server, tls_files: TlsFiles
) -> None:
    limit = ("grpc.max_receive_message_length", 1_000_000)
    async with h3_client(server, tls_files, channel_options=[limit]) as client:
        with pytest.raises(grpc.RpcError) as failure:
            await client.say_hello(HelloRequest(name="size:2000000"), timeout=10)
        # the connection is fine afterwards
        assert (await client.say_hello(HelloRequest(name="ok"), timeout=5)).message == "Hello, ok!"
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (failure.value.details() or "")


async def test_unknown_method_is_unimplemented(server: Server, tls_files: TlsFiles) -> None:
    async with H3Channel(
        server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca))
    ) as channel:
        missing = channel.unary_unary("/greeter.v1.Greeter/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await missing(b"", timeout=5)
        missing_service = channel.unary_stream("/nope.v1.Nope/Missing")
        with pytest.raises(grpc.aio.AioRpcError) as stream_failure:
            await missing_service(b"", timeout=5).read()
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert stream_failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_wrong_ca_fails_clearly_and_insecure_skip_verify_works(
    server: Server, tls_files: TlsFiles, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_tls_files(f"{tmp_path}/other-ca")
    async with h3_client(server, tls_files, ca_file=str(other.ca)) as client:
        with pytest.raises(CallFailedError) as failure:
            await client.say_hello(HelloRequest(name="x"), timeout=5, retry=NO_RETRY)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failure.value.details() or ""
    assert "handshake failed" in details and "certificate" in details, details

    async with h3_client(server, tls_files, ca_file=None, insecure_skip_verify=True) as client:
        reply = await client.say_hello(HelloRequest(name="anyway"), timeout=5)
    assert reply.message == "Hello, anyway!"


async def test_cancelled_call_and_closed_channel(server: Server, tls_files: TlsFiles) -> None:
    async with H3Channel(
        server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca))
    ) as channel:
        say = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello", HelloRequest.SerializeToString, HelloReply.FromString
        )
        call = say(HelloRequest(name="sleep:5"), timeout=10)
        await asyncio.sleep(0.1)
        assert call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(asyncio.CancelledError):
            await call
        pending = say(HelloRequest(name="sleep:5"), timeout=10)
        await asyncio.sleep(0.1)
    assert await pending.code() == grpc.StatusCode.CANCELLED
    assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_calls_beyond_the_servers_stream_limit_queue_instead_of_failing(
    server: Server, tls_files: TlsFiles
) -> None:
    # qh3 servers grant 100 concurrent request streams (MAX_STREAMS); grpc queues
    # calls past HTTP/2's limit, and so must we.
    async with h3_client(server, tls_files) as client:
        replies = await asyncio.gather(
            *(client.say_hello(HelloRequest(name=str(i)), timeout=10) for i in range(300))
        )
    assert len(replies) == 300


def _say_lots(channel: H3Channel) -> grpc.aio.UnaryStreamMultiCallable[HelloRequest, HelloReply]:
    return channel.unary_stream(
        "/greeter.v1.Greeter/LotsOfReplies",
        request_serializer=HelloRequest.SerializeToString,
        response_deserializer=HelloReply.FromString,
    )


def _two_message_channel(server: Server, tls_files: TlsFiles, message: int) -> H3Channel:
    """A channel whose receive limit is two messages of ``message`` bytes."""
    return H3Channel(
        server.host,
        server.port,
        tls=ClientTls(ca_file=str(tls_files.ca)),
        channel_options=[("grpc.max_receive_message_length", 2 * message)],
    )


async def test_a_slow_readers_receive_queue_is_bounded(server: Server, tls_files: TlsFiles) -> None:
    # qh3 grants QUIC credit itself as data arrives, so a server-streaming call
    # whose caller does not read cannot stop the server: the client holds at
    # most max(4 * max_receive_message_length, 16 MiB) unread, then fails the
    # call with RESOURCE_EXHAUSTED (the server's rule for unread requests).
    message = 1_000_000
    limit = 16 * 1024 * 1024
    async with _two_message_channel(server, tls_files, message) as channel:
        call = _say_lots(channel)(HelloRequest(name="x" * message, count=40), timeout=30)
        first = await call.read()  # then read nothing until the call ended
        await call.wait_done()
        read = 1
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            while await call.read() is not grpc.aio.EOF:
                read += 1
        peak = call.queued_peak  # type: ignore[union-attr]
        # the connection is fine afterwards
        after = _say_lots(channel)(HelloRequest(name="ok", count=2), timeout=10)
        assert [r.message async for r in after] == ["ok 0", "ok 1"]
    assert isinstance(first, HelloReply)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "not read" in (failure.value.details() or "")
    assert limit < peak <= limit + 2 * message  # over the limit by at most one message
    assert read < 40


async def test_a_fast_reader_is_not_limited_by_the_receive_queue_bound(
    server: Server, tls_files: TlsFiles
) -> None:
    message = 1_000_000
    async with _two_message_channel(server, tls_files, message) as channel:
        call = _say_lots(channel)(HelloRequest(name="x" * message, count=40), timeout=30)
        count = sum([1 async for _ in call])
        peak = call.queued_peak  # type: ignore[union-attr]
    assert count == 40  # 40 MB through a 16 MiB bound
    assert peak <= 16 * 1024 * 1024


async def test_headers_are_encoded_without_the_qpack_dynamic_table(
    server: Server, tls_files: TlsFiles
) -> None:
    # qh3 2.1's QPACK encoder slows down on a long-lived connection whose header
    # values keep changing (grpc-timeout counts down): both our sides encode with
    # the static table and literals only, so no encoder-stream instruction is sent.
    channel = H3Channel(server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca)))
    say = channel.unary_unary(
        "/greeter.v1.Greeter/SayHello",
        request_serializer=HelloRequest.SerializeToString,
        response_deserializer=HelloReply.FromString,
    )
    async with channel:
        for i in range(20):
            reply = await say(HelloRequest(name=str(i)), timeout=10 + i, metadata=[("k", str(i))])
            assert reply.message == f"Hello, {i}!"
        connection = await channel.connect()
        client_sent = connection._http._encoder_bytes_sent
    h3_server = server.h3_server
    assert h3_server is not None
    server_sent = [conn.h3._encoder_bytes_sent for conn in h3_server.connections]
    assert client_sent == 0
    assert server_sent and all(sent == 0 for sent in server_sent)
