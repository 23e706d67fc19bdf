"""Hypothesis over raw QUIC streams: garbage never hurts the server or other calls.

One server and one event loop for all examples (a sync test driving the
loop, since hypothesis does not run async tests). Each example opens a
stream and sends generated headers, DATA payloads, raw stream bytes and/or a
reset; then a well-formed call must succeed (on the same connection unless
the garbage was a connection-level HTTP/3 error, which RFC 9114 makes fatal
for that connection only). At the end the server holds no per-stream state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from greeter.v1.greeter_pb2 import HelloRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qh3.quic.connection import QuicConnectionError

from protoc_gen_localfirst.runtime.wire import encode_message
from tests.http3.server.conftest import GREETER, Served, serve
from tests.http3.server.rawclient import RawClient, Response, request_headers
from tests.support.certs import TlsFiles
from tests.support.waiting import wait_until_async

T = TypeVar("T")

NAMES = [
    b":method",
    b":path",
    b":scheme",
    b":authority",
    b":status",
    b"content-type",
    b"te",
    b"grpc-timeout",
    b"grpc-encoding",
    b"x-k",
    b"x-k-bin",
    b"X-Up",
    b"bad name",
    b"",
    b"connection",
]
VALUES = st.one_of(
    st.sampled_from([b"POST", b"GET", b"https", b"application/grpc", b"trailers", b"1S", b"gzip"]),
    st.sampled_from([GREETER.encode() + b"SayHello", b"/", b"", b"//", b"/a/b/c"]),
    st.binary(max_size=20),
)
HEADERS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8)


@dataclass
class Case:
    headers: list[tuple[bytes, bytes]] | None  # None: valid request headers
    path: str
    timeout: float | None
    payloads: list[bytes]  # DATA frame payloads (not length-prefixed by us)
    raw: bytes | None  # bytes straight on the stream, outside HTTP/3 framing
    end: bool
    reset: bool


CASES = st.builds(
    Case,
    headers=st.one_of(st.none(), HEADERS),
    path=st.sampled_from(
        [GREETER + m for m in ("SayHello", "LotsOfReplies", "LotsOfGreetings", "BidiHello")]
        + ["/grpc.health.v1.Health/Check", "/no.Such/Method"]
    ),
    timeout=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.05)),
    payloads=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.builds(
                lambda n: encode_message(HelloRequest(name=n).SerializeToString()),
                st.text(max_size=10),
            ),
            st.just(b"\x00\xff\xff\xff\xff"),  # 4 GiB announced
            st.just(b"\x01\x00\x00\x00\x01x"),  # compressed, no grpc-encoding
        ),
        max_size=4,
    ),
    raw=st.one_of(st.none(), st.binary(min_size=1, max_size=30)),
    end=st.booleans(),
    reset=st.booleans(),
)


class Harness:
    def __init__(self, tls: TlsFiles) -> None:
        self.loop = asyncio.new_event_loop()
        self.tls = tls
        self.served: Served = self.run(serve(tls))
        self.stack = contextlib.AsyncExitStack()
        self.client: RawClient = self.run(self._connect())
        self.reconnects = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _connect(self) -> RawClient:
        await self.stack.aclose()
        self.stack = contextlib.AsyncExitStack()
        client = await self.stack.enter_async_context(
            RawClient.connect(self.served.port, self.tls.ca)
        )
        # A stream the server answered and refused (STOP_SENDING) while our
        # garbage never ended it would hold one of the server's 32 stream
        # credits for good; 80 examples would run out of them.
        client.protocol.answer_stop_sending = True
        return client

    async def example(self, case: Case) -> None:
        if self.client.closed:
            self.reconnects += 1
            self.client = await self._connect()
        client = self.client
        sid = client.stream()
        with contextlib.suppress(Exception):  # qh3 refusing to send is not our concern
            headers = (
                case.headers
                if case.headers is not None
                else request_headers(case.path, timeout=case.timeout)
            )
            client.headers(sid, headers, end=case.end and not case.payloads and case.raw is None)
            for i, payload in enumerate(case.payloads):
                client.data(
                    sid, payload, end=case.end and case.raw is None and i == len(case.payloads) - 1
                )
            if case.raw is not None:
                client.raw(sid, case.raw, end=case.end)
            if case.reset:
                client.reset(sid)
        await asyncio.sleep(0.005)
        ok = await self._well_formed_call()
        if ok is None:  # the garbage was a connection error: that connection only
            self.reconnects += 1
            self.client = await self._connect()
            ok = await self._well_formed_call()
        assert ok is not None and ok.status.code == grpc.StatusCode.OK, ok and ok.status
        if not case.reset and not self.client.closed:
            # Give the garbage stream up, as a real client would at its deadline:
            # one that never ended (a unary handler still waiting for the end of
            # its request) holds one of the server's 32 stream credits, and 80
            # examples on one connection would run out of them.
            with contextlib.suppress(Exception):
                client.reset(sid)

    async def _well_formed_call(self) -> Response | None:
        if self.client.closed:
            return None
        try:
            response = await self.client.call(
                GREETER + "SayHello", [HelloRequest(name="ok").SerializeToString()]
            )
        except QuicConnectionError:
            return None
        if not response.headers and self.client.closed:
            return None
        return response

    async def settle(self) -> int:
        h3 = self.served.server.h3_server
        assert h3 is not None
        for _ in range(200):
            if h3.calls_in_flight == 0:
                break
            await asyncio.sleep(0.01)
        return h3.calls_in_flight

    def close(self) -> None:
        self.run(self.stack.aclose())
        self.run(self.served.server.stop(0))
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tls_files: TlsFiles) -> Iterator[Harness]:
    h = Harness(tls_files)
    yield h
    h.close()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=CASES)
def test_garbage_never_breaks_the_server(harness: Harness, case: Case) -> None:
    harness.run(harness.example(case))


def test_no_stream_state_left(harness: Harness) -> None:
    """Calls whose client neither finished nor reset them may still wait (as on
    grpc); closing the client's connection must release every one."""
    h3 = harness.served.server.h3_server
    assert h3 is not None
    assert h3.connections  # the server kept serving throughout
    harness.run(harness.stack.aclose())
    assert harness.run(harness.settle()) == 0


async def test_a_call_cancelled_in_its_first_datagram_is_answered_and_released(
    tls_files: TlsFiles,
) -> None:
    """HEADERS and bad DATA in one packet: the call is failed before its handler
    task first ran. It must still answer (INTERNAL) and leave no state while the
    connection stays open (a task cancelled before its first step never runs)."""
    served = await serve(tls_files)
    h3 = served.server.h3_server
    assert h3 is not None
    try:
        async with RawClient.connect(served.port, tls_files.ca) as client:
            sid = client.stream()
            client.h3.send_headers(
                sid, request_headers(GREETER + "LotsOfGreetings"), end_stream=False
            )
            client.h3.send_data(sid, b"\x01\x00\x00\x00\x01x", end_stream=False)  # no grpc-encoding
            client.protocol.transmit()  # both frames in one datagram
            response = await client.response(sid)
            assert response.status.code == grpc.StatusCode.INTERNAL, response.status
            await wait_until_async(
                lambda: h3.calls_in_flight == 0, what="the failed call released", timeout=5.0
            )
            assert not client.closed
    finally:
        await served.server.stop(0)
