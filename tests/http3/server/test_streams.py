"""Stream semantics over a raw qh3 client: errors, deadlines, cancel, limits, leaks."""

from __future__ import annotations

import asyncio

import grpc
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest
from grpc_health.v1 import health_pb2

from protoc_gen_localfirst.runtime.wire import H3Error, encode_message
from tests.http3.server.conftest import GREETER, NODE, Served, serve
from tests.http3.server.rawclient import RawClient, request_headers
from tests.support.certs import TlsFiles
from tests.support.waiting import wait_until_async


def hello(name: str, count: int | None = None) -> bytes:
    data: bytes = HelloRequest(name=name, count=count).SerializeToString()
    return data


async def settled(served: Served) -> int:
    """Calls still held by the server once pending work has run."""
    assert served.server.h3_server is not None
    for _ in range(100):
        if served.server.h3_server.calls_in_flight == 0:
            return 0
        await asyncio.sleep(0.01)
    return served.server.h3_server.calls_in_flight


async def test_unary_and_node_in_trailers(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        response = await client.call(GREETER + "SayHello", [hello("raw")])
    assert response.status.code == grpc.StatusCode.OK
    assert [HelloReply.FromString(m).message for m in response.messages] == ["hello raw"]
    assert (b"localfirst-node", NODE.encode()) in response.trailers
    assert (b"localfirst-node", NODE.encode()) not in response.headers  # unary: trailers only


async def test_unknown_method_and_health(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        missing = await client.call("/greeter.v1.Greeter/Nope", [b""])
        health = await client.call(
            "/grpc.health.v1.Health/Check",
            [health_pb2.HealthCheckRequest(service="greeter.v1.Greeter").SerializeToString()],
        )
    assert missing.status.code == grpc.StatusCode.UNIMPLEMENTED
    assert missing.data == b""  # trailers-only
    (message,) = health.messages
    assert health_pb2.HealthCheckResponse.FromString(message).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


async def test_grpc_timeout_header_gives_deadline_exceeded(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        response = await client.call(GREETER + "SayHello", [hello("sleep")], timeout=0.2)
    assert response.status.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert served.servicer.cancelled == ["sleep"]
    assert await settled(served) == 0


async def test_client_reset_cancels_the_handler(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        sid = client.stream()
        client.headers(sid, request_headers(GREETER + "SayHello"))
        client.data(sid, encode_message(hello("sleep")), end=True)
        h3 = served.server.h3_server
        assert h3 is not None
        await wait_until_async(
            lambda: h3.calls_in_flight == 1, what="the server to start the call", timeout=5
        )
        assert served.server.h3_server is not None
        assert served.server.h3_server.calls_in_flight == 1
        client.reset(sid)
        await wait_until_async(
            lambda: served.servicer.cancelled, what="the handler to be cancelled", timeout=5
        )
        assert served.servicer.cancelled == ["sleep"]
        assert await settled(served) == 0
        ok = await client.call(GREETER + "SayHello", [hello("after")])  # same connection
    assert ok.status.code == grpc.StatusCode.OK


async def test_stream_reset_mid_message(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        sid = client.stream()
        client.headers(sid, request_headers(GREETER + "LotsOfGreetings"))
        client.data(sid, encode_message(hello("a")) + encode_message(hello("b"))[:4])
        h3 = served.server.h3_server
        assert h3 is not None
        await wait_until_async(  # the server has the stream and reads its messages
            lambda: h3.calls_in_flight == 1, what="the server to start the call", timeout=5
        )
        client.reset(sid)
        ok = await client.call(GREETER + "SayHello", [hello("after")])
    assert ok.status.code == grpc.StatusCode.OK
    assert await settled(served) == 0


async def test_framing_errors(tls_files: TlsFiles) -> None:
    served = await serve(tls_files, max_message_size=1000)
    try:
        async with RawClient.connect(served.port, served.tls.ca) as client:
            too_big = client.stream()
            client.headers(too_big, request_headers(GREETER + "LotsOfGreetings"))
            client.data(too_big, b"\x00\x00\x00\x07\xd0")  # announces 2000 bytes; stream stays open
            compressed = await client.call(GREETER + "SayHello", [])
            sid = client.stream()
            client.headers(sid, request_headers(GREETER + "SayHello"))
            client.data(sid, b"\x01\x00\x00\x00\x01x", end=True)  # compressed, no grpc-encoding
            truncated = client.stream()
            client.headers(truncated, request_headers(GREETER + "SayHello"))
            client.data(truncated, encode_message(hello("t"))[:-1], end=True)
            big_reply = await client.call(GREETER + "SayHello", [hello("big", 5000)])
            results = [await client.response(s) for s in (too_big, sid, truncated)]
    finally:
        await served.server.stop(0)
    assert results[0].status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert compressed.status.code == grpc.StatusCode.INTERNAL  # no message at all
    assert results[1].status.code == grpc.StatusCode.INTERNAL
    assert results[2].status.code == grpc.StatusCode.INTERNAL
    assert "truncated" in results[2].status.message
    assert big_reply.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.server.h3_server is not None
    assert served.server.h3_server.calls_in_flight == 0


async def test_malformed_headers_reset_only_that_stream(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        bad = [
            [(b":method", b"POST"), (b":path", b"/x/y")],  # no :scheme
            [*request_headers(GREETER + "SayHello"), (b"X-Upper", b"1")],
            [(b"content-type", b"application/grpc"), *request_headers(GREETER + "SayHello")],
            [*request_headers(GREETER + "SayHello"), (b"connection", b"close")],
        ]
        sids = []
        for headers in bad:
            sid = client.stream()
            client.headers(sid, headers, end=True)
            sids.append(sid)
        results = [await client.response(s) for s in sids]
        ok = await client.call(GREETER + "SayHello", [hello("still")])
        assert not client.closed
    assert [r.reset_code for r in results] == [H3Error.MESSAGE_ERROR] * len(bad)
    assert ok.status.code == grpc.StatusCode.OK
    assert await settled(served) == 0


async def test_non_grpc_requests_are_refused(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        get = client.stream()
        client.headers(
            get,
            [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"x")],
            end=True,
        )
        text = client.stream()
        headers = request_headers(GREETER + "SayHello")
        client.headers(
            text, [(k, b"text/plain" if k == b"content-type" else v) for k, v in headers]
        )
        client.data(text, b"hello")  # request left open: the server stops it
        get_response, text_response = await client.response(get), await client.response(text)
    assert get_response.http_status == 405
    assert text_response.http_status == 415
    assert text_response.status.code == grpc.StatusCode.INTERNAL


async def test_streaming_response_respects_flow_control(tls_files: TlsFiles) -> None:
    """A 3 MB server stream to a client that reads slowly: no loss, no hang."""
    served = await serve(tls_files)
    try:
        async with RawClient.connect(served.port, served.tls.ca) as client:
            response = await client.call(
                GREETER + "LotsOfReplies", [hello("x" * 3000, 1000)], timeout=20
            )
    finally:
        await served.server.stop(0)
    assert response.status.code == grpc.StatusCode.OK
    assert len(response.messages) == 1000
