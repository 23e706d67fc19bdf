"""OpenTelemetryObserver and its server interceptor against real servers, HTTP/2 and HTTP/3.

Names, units, attributes and the client -> server trace (the attempt span's
``traceparent`` goes out in request metadata; the server span continues it).
No timing thresholds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode as SpanStatus

from protoc_gen_localfirst.runtime import NO_RETRY, Server
from tests.http3.client.conftest import NODE, Greeter, StartServer
from tests.otel.conftest import Telemetry
from tests.support.certs import TlsFiles

METHOD = "greeter.v1.Greeter/SayHello"


def client_for(
    server: Server, tls: TlsFiles, transport: str, telemetry: Telemetry, **options: Any
) -> GreeterClient:
    return GreeterClient(
        f"static:///{server.address}@{NODE}",
        node=NODE,
        probe_nodes=False,
        transport=transport,  # type: ignore[arg-type]
        ca_file=str(tls.ca),
        observers=[telemetry.observer],
        **options,
    )


async def serve(start: StartServer, greeter: Greeter, telemetry: Telemetry) -> Server:
    return await start(greeter, interceptors=[telemetry.observer.server_interceptor()])


def attributes(point: Any) -> dict[str, Any]:
    return dict(point.attributes)


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_client_and_server_metrics(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles, telemetry: Telemetry, transport: str
) -> None:
    server = await serve(start, greeter, telemetry)
    async with client_for(server, tls_files, transport, telemetry) as client:
        await client.say_hello(HelloRequest(name="a"), timeout=5)
        replies = [r async for r in client.lots_of_replies(HelloRequest(name="s", count=3))]
        assert len(replies) == 3
    target = f"static:///{server.address}@{NODE}"
    found = telemetry.metrics()
    units = {name: unit for name, (unit, _) in found.items()}
    assert units["grpc.client.attempt.started"] == "{attempt}"
    assert units["grpc.client.attempt.duration"] == "s"
    assert units["grpc.client.call.duration"] == "s"
    assert units["grpc.client.call.retries"] == "{retry}"
    assert units["grpc.client.call.retry_delay"] == "s"
    assert units["grpc.client.call.transparent_retries"] == "{transparent_retry}"
    assert units["grpc.server.call.started"] == "{call}"
    assert units["grpc.server.call.duration"] == "s"
    assert units["grpc.server.call.sent_total_compressed_message_size"] == "By"
    assert units["grpc.server.call.rcvd_total_compressed_message_size"] == "By"
    assert units["localfirst.client.attempts"] == "{attempt}"

    started = {
        attributes(p)["grpc.method"]: p.value for p in found["grpc.client.attempt.started"][1]
    }
    assert started == {METHOD: 1, "greeter.v1.Greeter/LotsOfReplies": 1}
    for point in found["grpc.client.attempt.started"][1]:
        assert attributes(point)["grpc.target"] == target
    calls = {
        attributes(p)["grpc.method"]: attributes(p) for p in found["grpc.client.call.duration"][1]
    }
    assert calls[METHOD] == {"grpc.method": METHOD, "grpc.target": target, "grpc.status": "OK"}
    attempt = next(
        attributes(p)
        for p in found["localfirst.client.attempts"][1]
        if attributes(p)["grpc.method"] == METHOD
    )
    assert attempt["localfirst.locality"] == "node"
    assert attempt["localfirst.outcome"] == "ok"

    served = {attributes(p)["grpc.method"]: p for p in found["grpc.server.call.duration"][1]}
    assert attributes(served[METHOD]) == {"grpc.method": METHOD, "grpc.status": "OK"}
    assert served[METHOD].count == 1
    server_started = {
        attributes(p)["grpc.method"]: p.value for p in found["grpc.server.call.started"][1]
    }
    assert server_started[METHOD] == 1
    received = {
        attributes(p)["grpc.method"]: p
        for p in found["grpc.server.call.rcvd_total_compressed_message_size"][1]
    }
    assert received[METHOD].sum == len(HelloRequest(name="a").SerializeToString())
    sent = {
        attributes(p)["grpc.method"]: p
        for p in found["grpc.server.call.sent_total_compressed_message_size"][1]
    }
    assert sent["greeter.v1.Greeter/LotsOfReplies"].sum > 0


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_one_trace_from_client_to_server(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles, telemetry: Telemetry, transport: str
) -> None:
    server = await serve(start, greeter, telemetry)
    async with client_for(server, tls_files, transport, telemetry) as client:
        await client.say_hello(HelloRequest(name="a"), timeout=5)
    (call,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.CLIENT]
    (attempt,) = telemetry.named(f"Attempt.{METHOD}")
    (served,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.SERVER]
    assert call.parent is None
    assert attempt.parent is not None and attempt.parent.span_id == call.context.span_id
    assert attempt.kind == SpanKind.CLIENT
    # The server continued the attempt's trace (traceparent in request metadata).
    assert served.context.trace_id == call.context.trace_id
    assert served.parent is not None and served.parent.span_id == attempt.context.span_id
    assert served.parent.is_remote
    attrs = dict(attempt.attributes or {})
    assert attrs["localfirst.endpoint"] == server.address
    assert attrs["localfirst.node"] == NODE
    assert attrs["localfirst.locality"] == "node"
    assert attrs["localfirst.transport"] == transport
    assert attrs["localfirst.outcome"] == "ok"
    assert attrs["grpc.status"] == "OK"
    assert attrs["rpc.grpc.status_code"] == 0
    call_attrs = dict(call.attributes or {})
    assert call_attrs["rpc.service"] == "greeter.v1.Greeter"
    assert call_attrs["rpc.method"] == "SayHello"
    assert call_attrs["localfirst.attempts"] == 1
    assert dict(served.attributes or {})["grpc.status"] == "OK"


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_an_error_status_on_both_sides(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles, telemetry: Telemetry, transport: str
) -> None:
    server = await serve(start, greeter, telemetry)
    async with client_for(server, tls_files, transport, telemetry, retry=NO_RETRY) as client:
        with pytest.raises(grpc.RpcError) as raised:
            await client.say_hello(HelloRequest(name="sleep:5"), timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (call,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.CLIENT]
    assert call.status.status_code == SpanStatus.ERROR
    assert dict(call.attributes or {})["grpc.status"] == "DEADLINE_EXCEEDED"
    points = telemetry.points("grpc.client.call.duration")
    assert [attributes(p)["grpc.status"] for p in points] == ["DEADLINE_EXCEEDED"]
    # The server's handler is cancelled when the deadline passes.
    for _ in range(500):  # a wait for an event, not a timing threshold
        if any(s.kind == SpanKind.SERVER for s in telemetry.named(METHOD)):
            break
        await asyncio.sleep(0.02)
    (served,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.SERVER]
    assert dict(served.attributes or {})["grpc.status"] in {"CANCELLED", "DEADLINE_EXCEEDED"}


async def test_blocking_client_sends_trace_context(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles, telemetry: Telemetry
) -> None:
    server = await serve(start, greeter, telemetry)

    def call() -> None:
        with GreeterSyncClient(
            f"static:///{server.address}@{NODE}",
            node=NODE,
            probe_nodes=False,
            ca_file=str(tls_files.ca),
            observers=[telemetry.observer],
        ) as client:
            client.say_hello(HelloRequest(name="a"), timeout=5)

    await asyncio.to_thread(call)
    (attempt,) = telemetry.named(f"Attempt.{METHOD}")
    (served,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.SERVER]
    assert served.context.trace_id == attempt.context.trace_id
    assert served.parent is not None and served.parent.span_id == attempt.context.span_id


def test_the_runtime_imports_without_opentelemetry() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import protoc_gen_localfirst.runtime, greeter.v1.greeter_localfirst\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "generated")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


class Aborting(Greeter):
    async def SayHello(self, request: HelloRequest, context: Any) -> Any:
        if request.name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such name")
        if request.name == "set-code":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("not now")
            return HelloReply()
        return await super().SayHello(request, context)


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_the_status_a_handler_ends_with(
    start: StartServer, tls_files: TlsFiles, telemetry: Telemetry, transport: str
) -> None:
    server = await serve(start, Aborting(), telemetry)
    async with client_for(server, tls_files, transport, telemetry, retry=NO_RETRY) as client:
        for name in ("missing", "set-code"):
            with pytest.raises(grpc.RpcError):
                await client.say_hello(HelloRequest(name=name), timeout=5)
    statuses = {attributes(p)["grpc.status"] for p in telemetry.points("grpc.server.call.duration")}
    assert statuses == {"NOT_FOUND", "FAILED_PRECONDITION"}
    client_statuses = {
        attributes(p)["grpc.status"] for p in telemetry.points("grpc.client.call.duration")
    }
    assert client_statuses == {"NOT_FOUND", "FAILED_PRECONDITION"}
    served = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.SERVER]
    assert {s.status.status_code for s in served} == {SpanStatus.ERROR}


async def test_locality_failover_and_transparent_retries_are_counted(
    start: StartServer, greeter: Greeter, tls_files: TlsFiles, telemetry: Telemetry
) -> None:
    server = await serve(start, greeter, telemetry)
    # The caller's own node has a replica that refuses connections: the call fails over.
    target = f"static:///127.0.0.1:1@node-a,{server.address}@{NODE}"
    async with GreeterClient(
        target,
        node="node-a",
        probe_nodes=False,
        ca_file=str(tls_files.ca),
        server_name="127.0.0.1",
        observers=[telemetry.observer],
    ) as client:
        await client.say_hello(HelloRequest(name="a"), timeout=5)
    attempts = {
        (attributes(p)["localfirst.locality"], attributes(p)["localfirst.outcome"]): p.value
        for p in telemetry.points("localfirst.client.attempts")
    }
    assert attempts == {("node", "unsent"): 1, ("other", "ok"): 1}
    (failovers,) = telemetry.points("localfirst.client.failovers")
    assert failovers.value == 1
    assert attributes(failovers) == {"grpc.method": METHOD, "grpc.target": target}
    (transparent,) = telemetry.points("grpc.client.call.transparent_retries")
    assert transparent.sum == 1
    (retries,) = telemetry.points("grpc.client.call.retries")
    assert retries.sum == 0
    (call,) = [s for s in telemetry.named(METHOD) if s.kind == SpanKind.CLIENT]
    assert [a.parent.span_id for a in telemetry.named(f"Attempt.{METHOD}") if a.parent] == [
        call.context.span_id
    ] * 2
