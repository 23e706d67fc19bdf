"""Server load: in-flight count, admission control, adaptive limit, load reports.

First ``ServerLoad`` and ``AdaptiveLimit`` on their own (fake clocks), then a
real server (``start_server(admission=1)``) over HTTP/2 and HTTP/3: a call
over the limit is refused at once, unprocessed, with the overload trailer
and a load report; health checks still answer; every OK response carries a
report.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoc_gen_localfirst.runtime.http3.client import H3Channel
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY, OVERLOADED_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY, LoadReport, decode
from protoc_gen_localfirst.runtime.server.bootstrap import Server, ServicerContext
from protoc_gen_localfirst.runtime.server.load import AdaptiveLimit, AdmissionControl, ServerLoad
from protoc_gen_localfirst.runtime.tls import ClientTls
from tests.server.conftest import ECHO_SERVICE, NODE, Client, Echo, StartServer, md
from tests.server.h2frames import call_frames
from tests.support.certs import TlsFiles, tls_files  # noqa: F401
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report_of(load: ServerLoad) -> LoadReport:
    decoded = decode(load.report())
    assert decoded is not None
    return decoded


# --- ServerLoad ------------------------------------------------------------------------


def test_a_static_limit_admits_up_to_the_limit_and_refuses_beyond() -> None:
    load = ServerLoad(3, clock=FakeClock(), cpu_clock=FakeClock(0.0))
    assert load.limit == 3
    assert [load.admit() for _ in range(3)] == [True, True, True]
    assert load.admit() is False
    assert load.admit() is False
    assert (load.in_flight, load.refused) == (3, 2)  # refused calls are not counted in
    load.release(0.01)
    assert load.in_flight == 2
    assert load.admit() is True  # the freed slot
    assert load.admit() is False
    assert (load.in_flight, load.refused) == (3, 3)
    assert report_of(load) == LoadReport(in_flight=3, limit=3)


def test_without_admission_every_call_is_admitted_and_the_estimate_is_reported() -> None:
    load = ServerLoad(clock=FakeClock(), cpu_clock=FakeClock(0.0))
    assert not load.enforced
    assert load.limit == AdmissionControl().initial_limit  # the adaptive estimate, not enforced
    assert all(load.admit() for _ in range(1000))
    assert (load.in_flight, load.refused) == (1000, 0)
    decoded = report_of(load)
    assert (decoded.in_flight, decoded.limit) == (1000, 20)
    assert decoded.utilization == 50.0  # far over the estimate: clients keep their calls away


@pytest.mark.parametrize("admission", [0, -1, True, False, "8", 2.5])
def test_invalid_admission_values_raise(admission: Any) -> None:
    with pytest.raises(ValueError, match="admission"):
        ServerLoad(admission)


@pytest.mark.parametrize("admission", [0, -1, True, "8"])
async def test_start_server_refuses_invalid_admission(start: StartServer, admission: Any) -> None:
    with pytest.raises(ValueError, match="admission"):
        await start(Echo(), admission=admission)


def test_the_report_carries_calls_per_second_and_cpu_over_the_last_second() -> None:
    clock, cpu = FakeClock(100.0), FakeClock(50.0)
    load = ServerLoad(4, clock=clock, cpu_clock=cpu, cpus=2)
    for _ in range(4):
        load.admit()
    clock.now += 0.5
    assert report_of(load).rps == 0.0  # less than a second: the window has not rolled
    clock.now += 1.5
    cpu.now += 1.0  # 1 s of CPU in 2 s on 2 cores: a quarter
    decoded = report_of(load)
    assert decoded.rps == pytest.approx(4 / 2.0)
    assert decoded.cpu_utilization == pytest.approx(0.25)
    assert (decoded.in_flight, decoded.limit) == (4, 4)


def test_a_metrics_hook_appears_in_the_report() -> None:
    depth = {"queue": 3.0, "cache_hit": 0.9}
    load = ServerLoad(2, metrics=lambda: depth, clock=FakeClock(), cpu_clock=FakeClock(0.0))
    load.admit()
    assert report_of(load) == LoadReport(in_flight=1, limit=2, metrics=depth)
    depth["queue"] = 5.0  # asked again for every report
    assert report_of(load).metrics["queue"] == 5.0


def test_a_failing_metrics_hook_does_not_break_the_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("hook broke")

    load = ServerLoad(2, metrics=broken, clock=FakeClock(), cpu_clock=FakeClock(0.0))
    load.admit()
    with caplog.at_level(logging.ERROR, logger="protoc_gen_localfirst.server"):
        decoded = report_of(load)
    assert decoded == LoadReport(in_flight=1, limit=2)
    assert "load_metrics hook failed" in caplog.text


# --- AdaptiveLimit ---------------------------------------------------------------------

SETTINGS = AdmissionControl(initial_limit=10, min_limit=8, max_limit=12, probe_interval=30.0)
NO_LOAD = 0.010


def test_the_limit_grows_while_latency_stays_at_no_load_and_the_limit_binds() -> None:
    limit = AdaptiveLimit(SETTINGS, now=0.0)
    limit.sample(NO_LOAD, in_flight=10, now=1.0)
    assert limit.limit == 11
    limit.sample(NO_LOAD, in_flight=6, now=1.1)  # at least half the limit in flight
    assert limit.limit == 12
    for i in range(5):
        limit.sample(NO_LOAD, in_flight=12, now=1.2 + i)
    assert limit.limit == 12  # max_limit


def test_the_limit_shrinks_when_latency_shows_queueing() -> None:
    limit = AdaptiveLimit(SETTINGS, now=0.0)
    limit.sample(NO_LOAD, in_flight=10, now=1.0)  # learns the no-load latency (grows to 11)
    # 11 x (1 - 10/50 ms) = 8.8 calls queueing, more than max_queue x log10(11): shrink.
    limit.sample(5 * NO_LOAD, in_flight=11, now=1.1)
    assert limit.limit == 10
    for i in range(10):
        limit.sample(5 * NO_LOAD, in_flight=10, now=1.2 + i / 10)
    assert limit.limit == 8  # min_limit


def test_the_limit_holds_while_a_little_queueing_shows() -> None:
    limit = AdaptiveLimit(SETTINGS, now=0.0)
    limit.sample(NO_LOAD, in_flight=4, now=1.0)  # learns the no-load latency (app-limited)
    assert limit.limit == 10
    # 10 x (1 - 10/12.5 ms) = 2 queueing: between min_queue (1) and max_queue (3).
    limit.sample(0.0125, in_flight=10, now=1.1)
    assert limit.limit == 10


def test_the_limit_does_not_move_while_app_limited() -> None:
    limit = AdaptiveLimit(SETTINGS, now=0.0)
    limit.sample(NO_LOAD, in_flight=1, now=1.0)
    limit.sample(NO_LOAD, in_flight=4, now=1.1)  # fast, but 4 of 10: the limit does not bind
    assert limit.limit == 10
    limit.sample(100 * NO_LOAD, in_flight=4, now=1.2)  # slow, but not the limit's doing
    assert limit.limit == 10


def test_the_no_load_latency_is_measured_afresh_after_the_probe_interval() -> None:
    limit = AdaptiveLimit(SETTINGS, now=0.0)
    limit.sample(NO_LOAD, in_flight=1, now=1.0)  # app-limited, but learns 10 ms
    limit.sample(5 * NO_LOAD, in_flight=10, now=2.0)  # queueing against 10 ms
    assert limit.limit == 9
    # 30 s later the old minimum is dropped: 50 ms is the new no-load latency.
    limit.sample(5 * NO_LOAD, in_flight=9, now=40.0)
    assert limit.limit == 10


def test_server_load_feeds_unary_latencies_to_the_adaptive_limit() -> None:
    clock = FakeClock()
    load = ServerLoad(AdmissionControl(initial_limit=2, min_limit=1, max_limit=4), clock=clock)
    assert load.limit == 2
    assert load.admit() and load.admit() and not load.admit()
    load.release(NO_LOAD)  # 2 in flight at no-load latency: grows
    assert load.limit == 3
    load.release(None)  # a stream's end: no latency, no change
    assert load.limit == 3
    assert report_of(load).limit == 3


@pytest.mark.parametrize(
    "settings",
    [
        {"min_limit": 0},
        {"initial_limit": 1, "min_limit": 2},
        {"initial_limit": 2000},
        {"min_queue": 3.0, "max_queue": 3.0},
        {"min_queue": -1.0},
        {"probe_interval": 0.0},
        {"probe_interval": float("nan")},
    ],
)
def test_invalid_admission_control_settings_raise(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="AdmissionControl"):
        AdmissionControl(**settings)


# --- a real server, over HTTP/2 and HTTP/3 -----------------------------------------------

_h3_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(71, 80))
"""HTTP/3 servers listen where the test certificate has a SAN (127.0.0.1 .. 99)."""


class CountingEcho(Echo):
    """``Echo`` that counts how often ``Say`` ran."""

    def __init__(self) -> None:
        super().__init__()
        self.says: list[str] = []

    async def Say(self, request: StringValue, context: ServicerContext[Any, Any]) -> StringValue:
        self.says.append(request.value)
        return await super().Say(request, context)


Connect = Callable[[Server], grpc.aio.Channel]


@pytest.fixture(params=["h2", "h3"])
async def transport(
    request: pytest.FixtureRequest,
    start: StartServer,
    tls_files: TlsFiles,  # noqa: F811
) -> AsyncIterator[tuple[StartServer, Connect]]:
    """(start a server, open a channel to it) over HTTP/2 or over HTTP/3."""
    channels: list[grpc.aio.Channel] = []
    h3 = request.param == "h3"

    async def _start(*servicers: object, **options: Any) -> Server:
        if h3:
            options.update(
                host=next(_h3_hosts),
                http3=True,
                certfile=str(tls_files.cert),
                keyfile=str(tls_files.key),
            )
        return await start(*servicers, **options)

    def _connect(server: Server) -> grpc.aio.Channel:
        channel: grpc.aio.Channel
        if h3:
            channel = H3Channel(server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca)))
        else:
            channel = grpc.aio.insecure_channel(f"{server.host}:{server.port}")
        channels.append(channel)
        return channel

    yield _start, _connect
    for channel in channels:
        await channel.close()


def sv(text: str) -> StringValue:
    return StringValue(value=text)


def load_report(trailers: Any) -> LoadReport:
    value = md(trailers).get(LOAD_REPORT_KEY)
    assert isinstance(value, bytes), f"no load report in {trailers!r}"
    decoded = decode(value)
    assert decoded is not None
    return decoded


async def health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


async def test_a_call_over_the_limit_is_refused_at_once_unprocessed(
    transport: tuple[StartServer, Connect],
) -> None:
    start, connect = transport
    echo = CountingEcho()
    server = await start(echo, admission=1)
    client = Client(connect(server))
    blocked = client.say(sv("block"), timeout=30)
    await asyncio.wait_for(echo.started.wait(), 10)

    # Refused while the first call still holds the only slot: it did not queue
    # (a queued call would end with DEADLINE_EXCEEDED, or after the release).
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.say(sv("second"), timeout=20)
    assert not blocked.done()
    error = refused.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in (error.details() or "")
    trailers = md(error.trailing_metadata())
    assert trailers[OVERLOADED_KEY] == "true"
    assert trailers[NODE_METADATA_KEY] == NODE
    assert md(error.initial_metadata()) == {}  # trailers-only: nothing committed
    assert echo.says == ["block"]  # the refused call's handler never ran

    # Health checks are neither counted nor refused at the limit.
    channel = connect(server)
    assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert await health(channel, ECHO_SERVICE.name) == health_pb2.HealthCheckResponse.SERVING

    echo.release.set()
    assert (await blocked).value == "hello block"
    after = await client.say(sv("after"), timeout=10)  # the slot is free again
    assert after.value == "hello after"
    assert echo.says == ["block", "after"]


@pytest.mark.parametrize("transport", ["h2", "h3"], indirect=True)
async def test_a_refusal_and_the_answers_carry_load_reports(
    transport: tuple[StartServer, Connect],
) -> None:
    start, connect = transport
    echo = CountingEcho()
    server = await start(echo, admission=1)
    client = Client(connect(server))
    blocked = client.say(sv("block"), timeout=30)
    await asyncio.wait_for(echo.started.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.say(sv("second"), timeout=20)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    refusal = load_report(refused.value.trailing_metadata())
    assert (refusal.in_flight, refusal.limit, refusal.utilization) == (1, 1, 1.0)
    echo.release.set()
    await blocked
    answer = load_report(await blocked.trailing_metadata())
    assert (answer.in_flight, answer.limit) == (1, 1)  # itself, as it finished


@pytest.mark.parametrize("transport", ["h2", "h3"], indirect=True)
async def test_every_ok_response_carries_a_load_report(
    transport: tuple[StartServer, Connect],
) -> None:
    start, connect = transport
    server = await start(Echo(), load_metrics=lambda: {"queue": 7.0})
    client = Client(connect(server))

    async def requests() -> AsyncIterator[StringValue]:
        for text in ("a", "b"):
            yield sv(text)

    unary = client.say(sv("x"), timeout=10)
    assert (await unary).value == "hello x"
    server_stream = client.expand(sv("x"), timeout=10)
    assert [r.value async for r in server_stream] == ["x-0", "x-1", "x-2"]
    client_stream = client.collect(requests(), timeout=10)
    assert (await client_stream).value == "a,b"
    bidi = client.chat(requests(), timeout=10)
    assert [r.value async for r in bidi] == ["A", "B"]

    for call in (unary, server_stream, client_stream, bidi):
        assert await call.code() == grpc.StatusCode.OK
        decoded = load_report(await call.trailing_metadata())
        assert decoded.in_flight == 1  # this call, nothing else running
        assert decoded.limit == 20  # no admission control: the (initial) capacity estimate
        assert decoded.metrics == {"queue": 7.0}


async def test_the_server_sends_the_report_on_http2(echo_server: Server) -> None:
    """On the wire (raw HTTP/2 frames): the trailers carry the report key."""
    frames = await asyncio.to_thread(
        call_frames,
        echo_server.host,
        echo_server.port,
        f"/{ECHO_SERVICE.name}/Say",
        sv("x").SerializeToString(),
    )
    assert [f.describe() for f in frames] == ["HEADERS", "DATA", "HEADERS+END_STREAM"]
    # grpc core writes header names as plain (not Huffman-coded) literals.
    assert LOAD_REPORT_KEY.encode() in frames[-1].payload
    assert LOAD_REPORT_KEY.encode() not in frames[0].payload


async def test_http2_and_http3_share_one_count(
    start: StartServer,
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    echo = CountingEcho()
    server = await start(
        echo,
        admission=1,
        host=next(_h3_hosts),
        http3=True,
        certfile=str(tls_files.cert),
        keyfile=str(tls_files.key),
    )
    roots = grpc.ssl_channel_credentials(tls_files.ca.read_bytes())
    h2 = grpc.aio.secure_channel(f"{server.host}:{server.port}", roots)
    h3 = H3Channel(server.host, server.port, tls=ClientTls(ca_file=str(tls_files.ca)))
    try:
        blocked = Client(h2).say(sv("block"), timeout=30)
        await wait_until_async(lambda: echo.says == ["block"], what="the HTTP/2 call to start")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Client(h3).say(sv("over http/3"), timeout=20)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert md(refused.value.trailing_metadata())[OVERLOADED_KEY] == "true"
        assert echo.says == ["block"]
        echo.release.set()
        assert (await blocked).value == "hello block"
        assert (await Client(h3).say(sv("then"), timeout=10)).value == "hello then"
    finally:
        await h2.close()
        await h3.close()
