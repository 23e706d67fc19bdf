"""Drain (GOAWAY), alt-svc on HTTP/2, ports, options, gtlsclient, aioquic."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

import grpc
import grpc.aio
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, start_server
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime.server.bootstrap import BindError, Binding
from protoc_gen_localfirst.runtime.wire import H3Error, encode_message
from tests.http3.server.conftest import GREETER, Served, buf_curl, serve
from tests.http3.server.rawclient import RawClient, request_headers
from tests.http3.server.servicer import EchoGreeter
from tests.support.certs import TlsFiles

_ = GreeterClient, Binding


def hello(name: str) -> bytes:
    data: bytes = HelloRequest(name=name).SerializeToString()
    return data


async def test_drain_sends_goaway_and_in_flight_calls_complete(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        in_flight = client.stream()
        client.headers(in_flight, request_headers(GREETER + "SayHello"))
        client.data(in_flight, encode_message(hello("sleep0.8")), end=True)
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(served.server.stop(grace=5))
        await asyncio.wait_for(client.protocol.goaway_event.wait(), 2)
        assert client.protocol.goaway is not None and client.protocol.goaway > in_flight
        late = client.stream()
        client.headers(late, request_headers(GREETER + "SayHello"))
        client.data(late, encode_message(hello("late")), end=True)
        late_response = await client.response(late)
        response = await client.response(in_flight, timeout=5)
        await asyncio.wait_for(stopping, 10)
        await asyncio.wait_for(client.protocol.terminated.wait(), 2)
    assert response.status.code == grpc.StatusCode.OK
    assert served.servicer.completed == ["sleep0.8"]
    assert late_response.reset_code == H3Error.REQUEST_REJECTED


async def test_stop_cancels_calls_past_grace(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        sid = client.stream()
        client.headers(sid, request_headers(GREETER + "SayHello"))
        client.data(sid, encode_message(hello("sleep")), end=True)
        await asyncio.sleep(0.1)
        await served.server.stop(grace=0.2)
        response = await client.response(sid)
    assert response.status.code == grpc.StatusCode.UNAVAILABLE
    assert served.servicer.cancelled == ["sleep"]


async def test_http2_responses_advertise_http3(served: Served) -> None:
    credentials = grpc.ssl_channel_credentials(served.tls.ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{served.port}", credentials) as channel:
        unary = channel.unary_unary(
            GREETER + "SayHello",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        call = unary(hello("h2"))
        await call
        trailers = dict(await call.trailing_metadata() or ())
        stream = channel.unary_stream(
            GREETER + "LotsOfReplies",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        streamed = stream(hello("h2"))
        headers = dict(await streamed.initial_metadata() or ())
        async for _ in streamed:
            pass
        stream_trailers = dict(await streamed.trailing_metadata() or ())
    value = f'h3=":{served.port}"'
    assert trailers["localfirst-alt-svc"] == value
    assert headers["alt-svc"] == value
    assert stream_trailers["localfirst-alt-svc"] == value
    assert served.server.h3_server is not None and served.server.h3_server.port == served.port


async def test_udp_port_taken_is_a_clear_error(tls_files: TlsFiles) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        with pytest.raises(BindError, match=f"UDP port {port}"):
            await start_server(
                EchoGreeter(),
                host="127.0.0.1",
                port=port,
                http3=True,
                certfile=str(tls_files.cert),
                keyfile=str(tls_files.key),
            )
        # the TCP listener is released again (grpc closes it asynchronously)
        for _ in range(50):
            try:
                with socket.socket() as tcp:
                    tcp.bind(("127.0.0.1", port))
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail(f"TCP port {port} still in use after the failed start")


async def test_options_are_checked(tls_files: TlsFiles) -> None:
    with pytest.raises(ValueError, match="http3=True needs certfile and keyfile"):
        await start_server(EchoGreeter(), port=0, http3=True)
    with pytest.raises(ValueError, match="certfile=.* needs keyfile too"):
        await start_server(EchoGreeter(), port=0, certfile=str(tls_files.cert))
    with pytest.raises(ValueError, match="certfile=./nonexistent.: no such file"):
        await start_server(
            EchoGreeter(), port=0, http3=True, certfile="/nonexistent", keyfile=str(tls_files.key)
        )
    with pytest.raises(ValueError, match="quic_library"):
        await start_server(EchoGreeter(), port=0, quic_library="quiche")  # type: ignore[arg-type]


async def _gtlsclient(port: int, *extra: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/gtlsclient",
        "--exit-on-all-streams-close",
        "--no-quic-dump",
        "--timeout=5s",
        *extra,
        "127.0.0.1",
        str(port),
        f"https://127.0.0.1:{port}{GREETER}SayHello",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    return out.decode(errors="replace") + err.decode(errors="replace")


async def test_gtlsclient_non_grpc_requests_are_rejected(served: Served) -> None:
    if not Path("/usr/bin/gtlsclient").exists():
        pytest.fail("gtlsclient missing: apt-get install ngtcp2-client (scripts/test.sh does)")
    get = await _gtlsclient(served.port)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as body:
        body.write("plain text, not gRPC")
        body.flush()
        post = await _gtlsclient(served.port, "-m", "POST", "-d", body.name)
    assert "[:status: 405]" in get
    assert "[:status: 415]" in post  # gtlsclient sends no content-type: not application/grpc
    assert "[grpc-status: 13]" in post
    after = await buf_curl(served, "SayHello", "-d", '{"name":"after"}')
    assert after.returncode == 0
    assert served.server.h3_server is not None and served.server.h3_server.calls_in_flight == 0


async def test_aioquic_serves_the_same(tls_files: TlsFiles) -> None:
    served = await serve(tls_files, quic_library="aioquic")
    try:
        unary, stream, bidi = await asyncio.gather(
            buf_curl(served, "SayHello", "-d", '{"name":"aio"}'),
            buf_curl(served, "LotsOfReplies", "-d", '{"name":"s","count":50}'),
            buf_curl(served, "BidiHello", "-d", "@-", stdin=b'{"name":"x"}{"name":"y"}'),
        )
        async with RawClient.connect(served.port, served.tls.ca) as client:
            bad = client.stream()
            client.headers(bad, [*request_headers(GREETER + "SayHello"), (b"Bad", b"1")], end=True)
            bad_response = await client.response(bad)
            ok = await client.call(GREETER + "SayHello", [hello("ok")])
    finally:
        await served.server.stop(0)
    assert (unary.returncode, stream.returncode, bidi.returncode) == (0, 0, 0)
    assert '"hello aio"' in unary.stdout
    assert stream.stdout.count('"message"') == 50
    assert bad_response.reset_code == H3Error.MESSAGE_ERROR
    assert ok.status.code == grpc.StatusCode.OK
