"""Fixtures for server tests: a hand-written method table over StringValue.

No codegen: ``ECHO_SERVICE`` is what a generated module would hold for

    service Echo {
      rpc Say(StringValue) returns (StringValue);
      rpc Expand(StringValue) returns (stream StringValue);
      rpc Collect(stream StringValue) returns (StringValue);
      rpc Chat(stream StringValue) returns (stream StringValue);
      rpc Missing(StringValue) returns (StringValue);      // never implemented
      rpc MissingStream(StringValue) returns (stream StringValue);
    }
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.server.bootstrap import (
    Server,
    Servicer,
    ServicerContext,
    abort_unimplemented,
    bind_servicers,
    start_server,
    unimplemented_stream,
)
from protoc_gen_localfirst.schema import MethodInfo, MethodKind, ServiceInfo

PACKAGE = "lftest.v1"
NODE = "node-under-test"


def _method(service: str, name: str, kind: MethodKind) -> MethodInfo[StringValue, StringValue]:
    return MethodInfo(service, name, kind, StringValue, StringValue)


def make_service(short: str, *rpcs: tuple[str, MethodKind]) -> ServiceInfo:
    name = f"{PACKAGE}.{short}"
    return ServiceInfo(name, tuple(_method(name, rpc, kind) for rpc, kind in rpcs))


ECHO_SERVICE = make_service(
    "Echo",
    ("Say", MethodKind.UNARY_UNARY),
    ("Expand", MethodKind.UNARY_STREAM),
    ("Collect", MethodKind.STREAM_UNARY),
    ("Chat", MethodKind.STREAM_STREAM),
    ("Missing", MethodKind.UNARY_UNARY),
    ("MissingStream", MethodKind.UNARY_STREAM),
)
OTHER_SERVICE = make_service("Other", ("Ping", MethodKind.UNARY_UNARY))


class EchoServicer(Servicer):
    """What a generated base looks like (every method UNIMPLEMENTED)."""

    SERVICE: ClassVar[ServiceInfo] = ECHO_SERVICE

    async def Say(self, request: StringValue, context: ServicerContext[Any, Any]) -> StringValue:
        await abort_unimplemented(context)

    def Expand(
        self, request: StringValue, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        return unimplemented_stream(context)

    async def Collect(
        self, request_iterator: AsyncIterator[StringValue], context: ServicerContext[Any, Any]
    ) -> StringValue:
        await abort_unimplemented(context)

    def Chat(
        self, request_iterator: AsyncIterator[StringValue], context: ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        return unimplemented_stream(context)

    async def Missing(
        self, request: StringValue, context: ServicerContext[Any, Any]
    ) -> StringValue:
        await abort_unimplemented(context)

    def MissingStream(
        self, request: StringValue, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        return unimplemented_stream(context)


class Echo(EchoServicer):
    """A user servicer; ``Say`` behaves according to the request text."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def Say(self, request: StringValue, context: ServicerContext[Any, Any]) -> StringValue:
        text = request.value
        if text == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try elsewhere")
        if text == "raise":
            raise RuntimeError("boom")
        if text == "set-code":
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details("set, not aborted")
            return StringValue()
        if text == "own-headers":
            await context.send_initial_metadata((("x-user", "mine"),))
        if text == "own-trailers":
            context.set_trailing_metadata((("x-trailer", "mine"),))
        if text == "abort-with-trailers":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no", (("x-trailer", "mine"),))
        if text == "block":
            self.started.set()
            await self.release.wait()
        return StringValue(value=f"hello {text}")

    async def Expand(
        self, request: StringValue, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        if request.value == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "before any message")
        for i in range(3):
            yield StringValue(value=f"{request.value}-{i}")
        if request.value == "fail-after":
            await context.abort(grpc.StatusCode.INTERNAL, "after messages")

    async def Collect(
        self, request_iterator: AsyncIterator[StringValue], context: ServicerContext[Any, Any]
    ) -> StringValue:
        return StringValue(value=",".join([r.value async for r in request_iterator]))

    async def Chat(
        self, request_iterator: AsyncIterator[StringValue], context: ServicerContext[Any, Any]
    ) -> AsyncIterator[StringValue]:
        async for request in request_iterator:
            yield StringValue(value=request.value.upper())


_next_ip = itertools.count(2)


@pytest.fixture
def loopback_host() -> str:
    """A fresh 127.0.0.x per test, so tests never share an address."""
    return f"127.0.0.{next(_next_ip) % 250 + 2}"


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start(loopback_host: str) -> AsyncIterator[StartServer]:
    """``await start(*servicers, **options)``: a started server, stopped at teardown."""
    servers: list[Server] = []

    async def _start(
        *servicers: object, services: tuple[ServiceInfo, ...] = (ECHO_SERVICE,), **options: Any
    ) -> Server:
        options.setdefault("host", loopback_host)
        options.setdefault("port", 0)
        options.setdefault("node", NODE)
        server = await start_server(bind_servicers(services, servicers), **options)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(0)


@pytest.fixture
async def echo_server(start: StartServer) -> Server:
    return await start(Echo())


class Client:
    """Raw grpc.aio multi-callables for ECHO_SERVICE; no runtime client code."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        ser, des = StringValue.SerializeToString, StringValue.FromString
        path = f"/{ECHO_SERVICE.name}/"
        self.say = channel.unary_unary(path + "Say", ser, des)
        self.expand = channel.unary_stream(path + "Expand", ser, des)
        self.collect = channel.stream_unary(path + "Collect", ser, des)
        self.chat = channel.stream_stream(path + "Chat", ser, des)
        self.missing = channel.unary_unary(path + "Missing", ser, des)
        self.missing_stream = channel.unary_stream(path + "MissingStream", ser, des)

    def unary(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable[StringValue, StringValue]:
        return self.channel.unary_unary(path, StringValue.SerializeToString, StringValue.FromString)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[Server], Client]]:
    channels: list[grpc.aio.Channel] = []

    def _client(server: Server) -> Client:
        channel = grpc.aio.insecure_channel(f"{server.host}:{server.port}")
        channels.append(channel)
        return Client(channel)

    yield _client
    for channel in channels:
        await channel.close()


@pytest.fixture
def client(echo_server: Server, client_for: Callable[[Server], Client]) -> Client:
    return client_for(echo_server)


def md(metadata: Any) -> dict[str, Any]:
    """Metadata as a dict (last value wins), or {} for None."""
    return {key: value for key, value in (metadata or ())}
