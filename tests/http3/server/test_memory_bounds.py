"""Memory bounds of the HTTP/3 server: the buffer budget, streams and connections.

First ``BufferBudget`` on its own (sans-IO), then a real server over a raw
qh3 client: a server-wide ``max_buffered_bytes`` sheds the call holding the
most unread request bytes (RESOURCE_EXHAUSTED), never a small newcomer, and
a small call still succeeds while one client fills the budget;
``max_concurrent_streams`` is the QUIC stream limit the client is granted;
``max_connections`` refuses a connection beyond it.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime.http3.budget import BufferBudget
from protoc_gen_localfirst.runtime.http3.server import H3Server
from protoc_gen_localfirst.runtime.wire import encode_message
from tests.http3.server.conftest import GREETER, Served, serve
from tests.http3.server.rawclient import RawClient, request_headers
from tests.support.certs import TlsFiles
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.timeout(60)

KIB = 1024


def hello(name: str) -> bytes:
    data: bytes = HelloRequest(name=name).SerializeToString()
    return data


def chunk(size: int) -> bytes:
    """One length-prefixed request message of about ``size`` bytes."""
    return encode_message(hello("x" * size))


# --- BufferBudget ------------------------------------------------------------------------


def test_the_biggest_holder_is_shed_not_the_newcomer() -> None:
    budget: BufferBudget[str] = BufferBudget(100)
    assert budget.hold("big", 80) == []
    assert budget.hold("small", 15) == []
    assert budget.hold("newcomer", 10) == ["big"]  # 105 > 100: the biggest goes
    assert (budget.total, budget.held("big"), budget.shed) == (25, 0, 1)
    assert budget.hold("small", 95) == ["small"]  # now the biggest itself
    assert (budget.total, len(budget)) == (10, 1)


def test_a_holder_that_grows_past_the_others_is_shed_itself() -> None:
    budget: BufferBudget[str] = BufferBudget(100)
    for holder, size in (("a", 40), ("b", 30), ("c", 20)):
        assert budget.hold(holder, size) == []
    assert budget.hold("c", 45) == ["c"]
    assert (budget.total, budget.shed) == (70, 1)


def test_holdings_shrink_and_drop() -> None:
    budget: BufferBudget[str] = BufferBudget(100)
    budget.hold("a", 60)
    budget.hold("a", 10)  # the handler read some
    budget.hold("b", 50)
    assert budget.total == 60
    budget.drop("a")
    budget.hold("b", 0)
    assert (budget.total, len(budget)) == (0, 0)


def test_no_limit_counts_but_never_sheds() -> None:
    budget: BufferBudget[str] = BufferBudget(None)
    assert budget.hold("a", 10**12) == []
    assert budget.total == 10**12
    with pytest.raises(ValueError, match="> 0 or None"):
        BufferBudget(0)


# --- a real server -------------------------------------------------------------------------


def h3(served: Served) -> H3Server:
    assert served.server.h3_server is not None
    return served.server.h3_server


async def open_collect(client: RawClient, payload: bytes) -> int:
    """A LotsOfGreetings call whose request stays open after ``payload``."""
    sid = client.stream()
    client.headers(sid, request_headers(GREETER + "LotsOfGreetings"))
    client.data(sid, payload)
    return sid


async def test_over_the_budget_the_biggest_holder_is_shed_and_small_calls_work(
    tls_files: TlsFiles,
) -> None:
    served = await serve(tls_files, max_buffered_bytes=1024 * KIB)
    served.servicer.reading.clear()  # handlers read nothing: request bytes pile up
    server = h3(served)
    try:
        async with (
            RawClient.connect(served.port, tls_files.ca) as abuser,
            RawClient.connect(served.port, tls_files.ca) as polite,
        ):
            big = await open_collect(abuser, b"".join(chunk(100 * KIB) for _ in range(9)))
            await wait_until_async(
                lambda: server.budget.total > 900 * KIB, what="the big call's bytes held"
            )
            small = await open_collect(polite, chunk(10 * KIB))
            await wait_until_async(
                lambda: len(server.budget) == 2, what="the small call's bytes held too"
            )

            # A newcomer that does not fit: the big holder is shed, not the newcomer.
            probe = await polite.call(GREETER + "SayHello", [hello("p" * 150 * KIB)])
            assert probe.status.code == grpc.StatusCode.OK
            shed = await abuser.response(big)
            assert shed.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_buffered_bytes=1048576" in shed.status.message
            assert server.budget.shed == 1
            assert server.budget.total < 1024 * KIB

            # The small call that was already waiting completes once its handler reads.
            polite.data(small, chunk(1), end=True)
            served.servicer.reading.set()
            done = await polite.response(small)
            assert done.status.code == grpc.StatusCode.OK
            assert HelloReply.FromString(done.messages[0]).message.startswith("hello x")
        await wait_until_async(lambda: server.budget.total == 0, what="every holding released")
    finally:
        await served.server.stop(0)


async def test_a_probe_succeeds_while_abusers_keep_the_budget_exhausted(
    tls_files: TlsFiles,
) -> None:
    """Small scale of bench/memory_abuse.py: streams keep sending to handlers that
    do not read; each unary probe on its own connection is still answered."""
    served = await serve(tls_files, max_buffered_bytes=512 * KIB)
    served.servicer.reading.clear()
    server = h3(served)
    try:
        async with (
            RawClient.connect(served.port, tls_files.ca) as abuser,
            RawClient.connect(served.port, tls_files.ca) as polite,
        ):
            streams = [await open_collect(abuser, chunk(64 * KIB)) for _ in range(6)]
            for round_ in range(4):
                for sid in streams:
                    abuser.data(sid, chunk(64 * KIB))
                await wait_until_async(
                    lambda: server.budget.shed >= 1, what="the budget exhausted, a holder shed"
                )
                probe = await polite.call(GREETER + "SayHello", [hello(f"probe{round_}")])
                assert probe.status.code == grpc.StatusCode.OK
                assert server.budget.total <= 512 * KIB
            codes = {(await abuser.response(sid)).status.code for sid in streams[:1]}
            assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        await served.server.stop(0)


async def test_max_concurrent_streams_is_the_quic_stream_limit(tls_files: TlsFiles) -> None:
    for library in ("qh3", "aioquic"):
        served = await serve(tls_files, max_concurrent_streams=3, quic_library=library)
        try:
            async with RawClient.connect(served.port, tls_files.ca) as client:
                await wait_until_async(
                    lambda: client.quic.max_concurrent_bidi_streams == 3,
                    what=f"the stream limit granted by {library}",
                )
                for name in ("a", "b", "c"):
                    response = await client.call(GREETER + "SayHello", [hello(name)])
                    assert response.status.code == grpc.StatusCode.OK
                # One more stream per stream closed: a limit on open streams, not on calls.
                await wait_until_async(
                    lambda: client.quic.max_concurrent_bidi_streams > 3,
                    what=f"stream credit returned by {library}",
                )
                response = await client.call(GREETER + "SayHello", [hello("d")])
                assert response.status.code == grpc.StatusCode.OK
        finally:
            await served.server.stop(0)


async def test_a_connection_beyond_max_connections_is_refused(tls_files: TlsFiles) -> None:
    served = await serve(tls_files, max_connections=1)
    server = h3(served)
    try:
        async with RawClient.connect(served.port, tls_files.ca) as first:
            with pytest.raises(ConnectionError):
                async with RawClient.connect(served.port, tls_files.ca):
                    pass
            assert server.refused_connections == 1
            ok = await first.call(GREETER + "SayHello", [hello("first")])
            assert ok.status.code == grpc.StatusCode.OK
        await wait_until_async(
            lambda: all(c.closed for c in server.connections), what="the first connection closed"
        )
        async with RawClient.connect(served.port, tls_files.ca) as again:
            ok = await again.call(GREETER + "SayHello", [hello("again")])
            assert ok.status.code == grpc.StatusCode.OK
    finally:
        await served.server.stop(0)


async def test_buffered_bytes_are_released_when_calls_end(served: Served) -> None:
    async with RawClient.connect(served.port, served.tls.ca) as client:
        response = await client.call(
            GREETER + "LotsOfGreetings", [hello("a" * 100 * KIB), hello("b")]
        )
        assert response.status.code == grpc.StatusCode.OK
    await wait_until_async(lambda: h3(served).budget.total == 0, what="no bytes held")
    await asyncio.sleep(0)
