"""Observer events from real calls: every call ends exactly once, streams the caller
stops reading and cancelled calls included, on both clients and both transports."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloRequest

from protoc_gen_localfirst.runtime import (
    AttemptFinished,
    AttemptInfo,
    BaseObserver,
    CallFinished,
    CallInfo,
)
from tests.http3.client.conftest import NODE, StartServer, greeter, host, start  # noqa: F401
from tests.support.certs import TlsFiles, tls_files  # noqa: F401


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.started: list[CallInfo] = []
        self.attempts: list[AttemptInfo] = []
        self.ended: list[AttemptFinished] = []
        self.finished: list[CallFinished] = []

    def on_call_started(self, call: CallInfo) -> None:
        self.started.append(call)

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        self.attempts.append(attempt)

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        self.ended.append(event)

    def on_call_finished(self, event: CallFinished) -> None:
        self.finished.append(event)


def options(server: Any, tls: TlsFiles, recorder: Recorder) -> dict[str, Any]:
    return {
        "target": f"static:///{server.address}@{NODE}",
        "node": NODE,
        "probe_nodes": False,
        "ca_file": str(tls.ca),
        "observers": [recorder],
    }


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_asyncio_calls_end_once_whatever_happens(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    transport: str,
) -> None:
    server = await start(greeter)
    recorder = Recorder()
    async with GreeterClient(**options(server, tls_files, recorder), transport=transport) as c:  # type: ignore[arg-type]
        await c.say_hello(HelloRequest(name="a"), timeout=5)
        stream = c.lots_of_replies(HelloRequest(name="forever"))
        assert (await anext(stream)).message == "0"
        await stream.aclose()  # type: ignore[attr-defined]  # the caller stops reading
        task = asyncio.ensure_future(c.say_hello(HelloRequest(name="sleep:5"), timeout=10))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [f.code for f in recorder.finished] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.CANCELLED,
    ]
    assert [f.call for f in recorder.finished] == recorder.started
    assert [e.outcome for e in recorder.ended] == ["ok", "cancelled", "cancelled"]
    first = recorder.finished[0]
    assert first.method == "greeter.v1.Greeter/SayHello"
    assert first.call.transport == transport
    assert first.endpoint is not None and first.endpoint.address == server.address
    assert first.locality == "node"
    assert recorder.attempts[0].node == NODE


async def test_blocking_calls_end_once_whatever_happens(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    server = await start(greeter)
    recorder = Recorder()

    def calls() -> None:
        with GreeterSyncClient(**options(server, tls_files, recorder)) as c:
            c.say_hello(HelloRequest(name="a"), timeout=5)
            stream = c.lots_of_replies(HelloRequest(name="forever"))
            assert next(stream).message == "0"
            stream.close()  # type: ignore[attr-defined]  # the caller stops reading

    await asyncio.to_thread(calls)
    assert [f.code for f in recorder.finished] == [grpc.StatusCode.OK, grpc.StatusCode.CANCELLED]
    assert [e.outcome for e in recorder.ended] == ["ok", "cancelled"]
