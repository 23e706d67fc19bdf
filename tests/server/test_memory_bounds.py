"""Memory bounds shared by both transports, and HTTP/2's: options, the call cap,
streams per connection and connections (HTTP/3's own: tests/http3/server).

``max_concurrent_calls`` is ``ServerLoad.max_calls``: refused like admission
control, and before the request body is read (the announcer asks when the
handler is looked up). HTTP/2 streams and connections are grpc core's limits;
the tests look at what core sends (SETTINGS) and does (closes a connection).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime import ServicerContext
from protoc_gen_localfirst.runtime.identity import OVERLOADED_KEY
from protoc_gen_localfirst.runtime.server.load import ServerLoad
from protoc_gen_localfirst.runtime.server.options import check_options, grpc_options
from protoc_gen_localfirst.runtime.wire import encode_message
from tests.http3.server.rawclient import RawClient, request_headers
from tests.server.conftest import ECHO_SERVICE, Client, StartServer, md
from tests.server.h2frames import MAX_CONCURRENT_STREAMS, call_frames, server_settings
from tests.server.test_load import Connect, CountingEcho, FakeClock, sv, transport  # noqa: F401
from tests.support.certs import TlsFiles, tls_files  # noqa: F401
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.timeout(60)

SAY = f"/{ECHO_SERVICE.name}/Say"

# --- options -----------------------------------------------------------------------------

STREAMS = "request streams per connection: an int in 1..2147483647, or None for no limit"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent_streams": 0}, ValueError, f"max_concurrent_streams=0: out of range ({STREAMS})"),
        ({"max_concurrent_streams": 2**31}, ValueError, f"max_concurrent_streams=2147483648: out of range ({STREAMS})"),
        ({"max_concurrent_streams": "8"}, TypeError, f"max_concurrent_streams='8': not an int ({STREAMS})"),
        (
            {"max_concurrent_calls": 1.5},
            TypeError,
            ("max_concurrent_calls=1.5: not an int (calls at once, server-wide: "
            "an int in 1..2147483647, or None for no limit)"),
        ),
        (
            {"max_connections": True},
            TypeError,
            ("max_connections=True: not an int (client connections at once: "
            "an int in 1..2147483647, or None for no limit)"),
        ),
        (
            {"max_buffered_bytes": -1},
            ValueError,
            ("max_buffered_bytes=-1: out of range (bytes, server-wide: "
            "an int in 1..4611686018427387904, or None for no limit)"),
        ),
    ],
)  # fmt: skip
def test_limit_options_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        check_options(options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_limit_options_become_grpc_arguments() -> None:
    defaults = dict(grpc_options({}))
    assert defaults["grpc.max_concurrent_streams"] == 32
    assert defaults["grpc.max_allowed_incoming_connections"] == 1024
    chosen = dict(grpc_options({"max_concurrent_streams": 8, "max_connections": 3}))
    assert (
        chosen["grpc.max_concurrent_streams"],
        chosen["grpc.max_allowed_incoming_connections"],
    ) == (8, 3)
    unlimited = dict(grpc_options({"max_concurrent_streams": None, "max_connections": None}))
    assert "grpc.max_concurrent_streams" not in unlimited
    assert "grpc.max_allowed_incoming_connections" not in unlimited
    check_options({"max_concurrent_calls": None, "max_buffered_bytes": 1})


# --- the call cap (sans-IO) --------------------------------------------------------------


def test_max_calls_is_a_hard_cap_with_or_without_admission_control() -> None:
    load = ServerLoad(None, max_calls=2, clock=FakeClock(), cpu_clock=FakeClock(0.0))
    assert [load.full(), load.admit(), load.admit(), load.full(), load.admit()] == [
        False, True, True, True, False,
    ]  # fmt: skip
    assert (load.in_flight, load.refused, load.limit) == (2, 2, 2)
    load.release(None)
    assert not load.full()
    assert ServerLoad(5, max_calls=2).limit == 2  # the lower limit applies
    assert ServerLoad(1, max_calls=2).limit == 1
    with pytest.raises(ValueError, match="max_calls"):
        ServerLoad(None, max_calls=0)


# --- a real server -------------------------------------------------------------------------


async def test_a_call_over_max_concurrent_calls_is_refused_unprocessed(
    transport: tuple[StartServer, Connect],  # noqa: F811
) -> None:
    start, connect = transport
    echo = CountingEcho()
    server = await start(echo, max_concurrent_calls=1)
    client = Client(connect(server))
    blocked = client.say(sv("block"), timeout=30)
    await asyncio.wait_for(echo.started.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.say(sv("second"), timeout=20)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert md(refused.value.trailing_metadata())[OVERLOADED_KEY] == "true"
    assert md(refused.value.initial_metadata()) == {}  # trailers-only: nothing committed
    assert echo.says == ["block"]
    echo.release.set()
    assert (await blocked).value == "hello block"
    assert (await client.say(sv("after"), timeout=10)).value == "hello after"


async def test_http2_refusal_comes_before_the_request_body(start: StartServer) -> None:
    echo = CountingEcho()
    server = await start(echo, max_concurrent_calls=1)
    channel = grpc.aio.insecure_channel(f"{server.host}:{server.port}")
    try:
        blocked = Client(channel).say(sv("block"), timeout=30)
        await asyncio.wait_for(echo.started.wait(), 10)
        # Request headers only: a server that read the body first would never answer.
        frames = await asyncio.to_thread(
            call_frames, server.host, server.port, SAY, b"", send_body=False
        )
        assert frames[0].describe() == "HEADERS+END_STREAM"  # trailers-only
        assert OVERLOADED_KEY.encode() in frames[0].payload
        echo.release.set()
        await blocked
    finally:
        await channel.close()


async def test_http3_refusal_comes_before_the_request_body(
    start: StartServer,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    echo = CountingEcho()
    server = await start(
        echo,
        max_concurrent_calls=1,
        host="127.0.0.81",
        http3=True,
        certfile=str(tls_files.cert),
        keyfile=str(tls_files.key),
    )
    async with RawClient.connect(server.port, tls_files.ca, host=server.host) as client:
        blocked = client.stream()
        client.headers(blocked, request_headers(SAY))
        client.data(blocked, encode_message(sv("block").SerializeToString()), end=True)
        await asyncio.wait_for(echo.started.wait(), 10)
        refused = client.stream()
        client.headers(refused, request_headers(SAY))  # no body, stream left open
        response = await client.response(refused)
        assert response.status.code == grpc.StatusCode.UNAVAILABLE
        assert (OVERLOADED_KEY.encode(), b"true") in response.headers  # trailers-only
        echo.release.set()
        assert (await client.response(blocked)).status.code == grpc.StatusCode.OK


async def test_max_concurrent_streams_is_http2_settings(start: StartServer) -> None:
    limited = await start(CountingEcho(), max_concurrent_streams=7)
    default = await start(CountingEcho(), port=0)
    limited_settings = await asyncio.to_thread(server_settings, limited.host, limited.port)
    default_settings = await asyncio.to_thread(server_settings, default.host, default.port)
    assert limited_settings[MAX_CONCURRENT_STREAMS] == 7
    assert default_settings[MAX_CONCURRENT_STREAMS] == 32


async def test_http2_connections_beyond_max_connections_are_closed(start: StartServer) -> None:
    server = await start(CountingEcho(), max_connections=1)
    target = f"{server.host}:{server.port}"
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    first = grpc.aio.insecure_channel(target, options=own_connection)
    assert (await Client(first).say(sv("first"), timeout=10)).value == "hello first"
    second = grpc.aio.insecure_channel(target, options=own_connection)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Client(second).say(sv("second"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # not processed: safe elsewhere
    await second.close()
    await first.close()

    async def a_new_connection_works() -> bool:
        channel = grpc.aio.insecure_channel(target, options=own_connection)
        try:
            await Client(channel).say(sv("again"), timeout=5)
            return True
        except grpc.aio.AioRpcError:
            return False
        finally:
            await channel.close()

    await wait_until_async(a_new_connection_works, what="a connection once the first closed")


class HoldingEcho(CountingEcho):
    """``hold...`` requests (any size) wait for ``release``: handlers holding their request."""

    async def Say(self, request: StringValue, context: ServicerContext[Any, Any]) -> StringValue:
        if request.value.startswith("hold"):
            self.says.append("hold")
            self.started.set()
            await self.release.wait()
            return StringValue(value="held")
        return await super().Say(request, context)


async def test_unary_requests_held_by_running_calls_are_bounded(
    transport: tuple[StartServer, Connect],  # noqa: F811
) -> None:
    """grpc reads a unary request whole and its handler holds it: over
    ``max_buffered_bytes`` of them, a request that does not fit is refused
    (unprocessed), while small ones still fit beside."""
    start, connect = transport
    echo = HoldingEcho()
    server = await start(echo, max_buffered_bytes=300_000)
    client = Client(connect(server))
    big = "hold" + "x" * 200_000
    held = client.say(sv(big), timeout=30)
    await asyncio.wait_for(echo.started.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.say(sv(big), timeout=20)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert md(refused.value.trailing_metadata())[OVERLOADED_KEY] == "true"
    assert "request bytes held, limit 300000" in (refused.value.details() or "")
    assert (await client.say(sv("small"), timeout=10)).value == "hello small"
    assert echo.says == ["hold", "small"]  # the refused one never ran
    echo.release.set()
    assert (await held).value == "held"
    assert (await client.say(sv(big), timeout=10)).value == "held"  # room again
