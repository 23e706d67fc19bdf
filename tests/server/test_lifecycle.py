"""Health, drain, stop, SIGTERM, binding and connection-age behaviour."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

from demo.cluster import REPO
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.server.bootstrap import BindError, Server, start_server
from tests.server.conftest import ECHO_SERVICE, NODE, Client, Echo, StartServer, md
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.timeout(30)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_stub(host: str, port: int) -> tuple[grpc.aio.Channel, health_pb2_grpc.HealthStub]:
    channel = grpc.aio.insecure_channel(f"{host}:{port}")
    return channel, health_pb2_grpc.HealthStub(channel)


async def test_health_serving_with_node(echo_server: Server) -> None:
    channel, stub = health_stub(echo_server.host, echo_server.port)
    async with channel:
        for service in ("", ECHO_SERVICE.name):
            call = stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert (await call).status == SERVING
            assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_drain_reports_not_serving_then_stops(start: StartServer) -> None:
    server = await start(Echo(), drain_delay=60.0, grace=5.0)
    channel, stub = health_stub(server.host, server.port)
    async with channel:
        drain = asyncio.create_task(server.drain())

        async def not_serving() -> bool:
            return bool((await stub.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING)

        await wait_until_async(not_serving, what="health NOT_SERVING")
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=ECHO_SERVICE.name))
        assert reply.status == NOT_SERVING
        assert not drain.done()  # still in the drain delay, still answering
        assert server.draining
        await server.stop(0)  # cuts the delay short
        await asyncio.wait_for(drain, 10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_drain_lets_in_flight_calls_finish(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    echo = Echo()
    server = await start(echo, drain_delay=0.0, grace=30.0)
    client = client_for(server)
    in_flight = client.say(StringValue(value="block"))
    await asyncio.wait_for(echo.started.wait(), 10)
    drain = asyncio.create_task(server.drain())
    probe_channel, probe = health_stub(server.host, server.port)
    async with probe_channel:

        async def refused() -> bool:
            try:
                await probe.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.aio.AioRpcError:
                return True
            return False

        await wait_until_async(refused, what="server refusing new calls")
    assert not drain.done()  # waiting for the in-flight call
    echo.release.set()
    assert (await in_flight).value == "hello block"
    assert md(await in_flight.trailing_metadata())[NODE_METADATA_KEY] == NODE
    await asyncio.wait_for(drain, 10)


async def test_grace_expiry_cancels_in_flight_calls(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    echo = Echo()
    server = await start(echo, drain_delay=0.0, grace=0.2)
    in_flight = client_for(server).say(StringValue(value="block"))
    await asyncio.wait_for(echo.started.wait(), 10)
    await server.drain()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await in_flight
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def test_health_watch_ends_on_drain_instead_of_holding_grace(start: StartServer) -> None:
    server = await start(Echo(), drain_delay=0.0, grace=600.0)
    channel, stub = health_stub(server.host, server.port)
    async with channel:
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=ECHO_SERVICE.name))
        assert (await watch.read()).status == SERVING
        drain = asyncio.create_task(server.drain())
        statuses = []
        while (reply := await watch.read()) is not grpc.aio.EOF:
            statuses.append(reply.status)
        assert statuses == [NOT_SERVING]
        assert await watch.code() == grpc.StatusCode.OK
        await asyncio.wait_for(drain, 10)


async def test_port_zero_picks_a_free_port(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    server = await start(Echo(), port=0)
    assert server.port > 0
    assert server.address == f"{server.host}:{server.port}"
    assert (await client_for(server).say(StringValue(value="p"))).value == "hello p"


async def test_ipv6_and_wildcard_addresses_are_formatted(start: StartServer) -> None:
    server = await start(Echo(), host="::1")
    assert server.address == f"[::1]:{server.port}"
    server = await start(Echo(), host="0.0.0.0")
    assert server.address == f"0.0.0.0:{server.port}"


async def test_bind_conflict_names_the_address(start: StartServer, loopback_host: str) -> None:
    first = await start(Echo())
    with pytest.raises(BindError) as info:
        await start(Echo(), port=first.port)
    message = str(info.value)
    assert f"{loopback_host}:{first.port}" in message
    assert "already in use" in message


async def test_bind_to_foreign_address_fails_clearly() -> None:
    from protoc_gen_localfirst.runtime.server.bootstrap import bind_servicers

    with pytest.raises(BindError, match=r"192\.0\.2\.1:0: address not available"):
        await start_server(bind_servicers([ECHO_SERVICE], [Echo()]), host="192.0.2.1", port=0)


async def test_unknown_option_is_rejected() -> None:
    from protoc_gen_localfirst.runtime.server.bootstrap import bind_servicers

    with pytest.raises(TypeError, match="unknown server option.*max_conection_age"):
        await start_server(
            bind_servicers([ECHO_SERVICE], [Echo()]),
            max_conection_age=1.0,  # type: ignore[call-arg]
        )


async def test_max_connection_age_closes_long_connections(start: StartServer) -> None:
    # gRFC A9: after max_connection_age (+-10% jitter, applied by grpc core)
    # the server sends GOAWAY; after the age grace it closes the connection,
    # ending even a call that would otherwise run forever.
    server = await start(Echo(), max_connection_age=0.3, max_connection_age_grace=0.3)
    channel, stub = health_stub(server.host, server.port)
    async with channel:
        watch = stub.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(15):
                await watch.read()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_without_max_connection_age_long_calls_survive(start: StartServer) -> None:
    server = await start(Echo(), max_connection_age=None)
    channel, stub = health_stub(server.host, server.port)
    async with channel:
        watch = stub.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        read = asyncio.ensure_future(watch.read())
        done, _ = await asyncio.wait({read}, timeout=1.5)  # > 0.3 s age + grace above
        assert not done
        read.cancel()
        watch.cancel()


# --- serve() in a real process ---------------------------------------------

SCRIPT = "tests.server.serve_script"


async def _spawn(
    host: str, drain_delay: float
) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", SCRIPT, host, str(drain_delay), cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"serve_script exited early: {lines}"
            lines.append(line)
            found = re.search(r"serving lftest\.v1\.Echo on (\S+):(\d+) as node script-node", line)
            if found:
                assert found.group(1) == host
                return proc, int(found.group(2)), lines


async def _finish(proc: asyncio.subprocess.Process, lines: list[str]) -> str:
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        rest = (await proc.stderr.read()).decode()
        code = await proc.wait()
    output = "".join(lines) + rest
    assert code == 0, output
    return output


async def test_sigterm_drains_and_exits_zero(loopback_host: str) -> None:
    proc, port, lines = await _spawn(loopback_host, drain_delay=0.2)
    try:
        async with grpc.aio.insecure_channel(f"{loopback_host}:{port}") as channel:
            call = Client(channel).say(StringValue(value="live"))
            assert (await call).value == "hello live"
            assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == "script-node"
        proc.send_signal(signal.SIGTERM)
        output = await _finish(proc, lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "SIGTERM: draining" in output
    assert "stopped" in output


async def test_sigterm_not_serving_during_delay_second_signal_stops(loopback_host: str) -> None:
    proc, port, lines = await _spawn(loopback_host, drain_delay=600.0)
    try:
        channel, stub = health_stub(loopback_host, port)
        async with channel:
            assert (await stub.Check(health_pb2.HealthCheckRequest())).status == SERVING
            proc.send_signal(signal.SIGTERM)

            async def not_serving() -> bool:
                return bool(
                    (await stub.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING
                )

            await wait_until_async(not_serving, what="NOT_SERVING after SIGTERM")
            assert proc.returncode is None  # waiting out the drain delay
        proc.send_signal(signal.SIGINT)
        output = await _finish(proc, lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "SIGINT again: stopping now" in output


async def test_stopping_server_refuses_new_calls_before_grpc_stops(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    """New calls during stop get a retryable UNAVAILABLE, not grpc core's CANCELLED.

    grpc core cancels calls that reached it but no handler yet when it stops; the
    client sees CANCELLED and cannot know the handler never ran. The bootstrap
    refuses new calls itself first, trailers-only, so clients retry elsewhere.
    """
    echo = Echo()
    server = await start(echo, drain_delay=0.0, grace=4.0)
    client = client_for(server)
    stop = asyncio.create_task(server.stop())

    async def refusing() -> bool:
        try:
            await client.say(StringValue(value="probe"), timeout=2)  # sets nothing on echo
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAVAILABLE
        return False

    # inside the refusal window (1 s), grpc not stopped yet
    await wait_until_async(refusing, what="the stopping server refusing new calls", timeout=5)
    call = client.say(StringValue(value="block"))  # would set echo.started if it ran
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "server is shutting down; call another replica"
    assert md(await call.initial_metadata()) == {}  # trailers-only: not committed
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE
    assert not echo.started.is_set()  # the handler never ran
    await asyncio.wait_for(stop, 10)
