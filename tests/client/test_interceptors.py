"""The ``interceptors=`` client option: grpc.aio interceptors on HTTP/2 and HTTP/3,
grpc's blocking interceptors on the blocking client; each runs once per attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import Server
from tests.http3.client.conftest import NODE, StartServer, greeter, host, start  # noqa: F401
from tests.support.certs import TlsFiles, tls_files  # noqa: F401


class _Tag:
    """Adds ``x-intercepted`` to the request metadata and records the methods.

    (grpc.aio files an interceptor under its first kind only: one per kind.)
    """

    def __init__(self, methods: list[str] | None = None) -> None:
        self.methods: list[str] = [] if methods is None else methods

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        method = details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("x-intercepted", "yes")
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class Tagging(_Tag, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class StreamTagging(_Tag, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class Answering(grpc.aio.UnaryUnaryClientInterceptor):
    """Answers without calling the server."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return HelloReply(message="from the interceptor")


def client(server: Server, tls: TlsFiles, transport: str, **options: Any) -> GreeterClient:
    return GreeterClient(
        f"static:///{server.address}@{NODE}",
        node=NODE,
        probe_nodes=False,
        transport=transport,  # type: ignore[arg-type]
        ca_file=str(tls.ca),
        **options,
    )


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_asyncio_interceptors_run_on_both_transports(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    transport: str,
) -> None:
    server = await start(greeter)
    tagging = Tagging()
    streams = StreamTagging(tagging.methods)
    async with client(server, tls_files, transport, interceptors=[tagging, streams]) as c:
        call = c.say_hello(HelloRequest(name="echo-metadata"), timeout=5)
        reply = await call
        assert reply.message == "Hello, echo-metadata!"
        replies = [r.message async for r in c.lots_of_replies(HelloRequest(name="s", count=2))]
        assert replies == ["s 0", "s 1"]
    assert tagging.methods == [
        "/greeter.v1.Greeter/SayHello",
        "/greeter.v1.Greeter/LotsOfReplies",
    ]


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_the_server_sees_the_interceptors_metadata(
    start: StartServer,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    transport: str,
) -> None:
    seen: list[str | bytes] = []

    class Recording(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen.extend(v for k, v in details.invocation_metadata if k == "x-intercepted")
            return await continuation(details)

    from tests.http3.client.conftest import Greeter

    server = await start(Greeter(), interceptors=[Recording()])
    async with client(server, tls_files, transport, interceptors=[Tagging()]) as c:
        await c.say_hello(HelloRequest(name="a"), timeout=5)
    assert seen == ["yes"]


@pytest.mark.parametrize("transport", ["h2", "h3"])
async def test_an_interceptor_may_answer_itself(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    transport: str,
) -> None:
    server = await start(greeter)
    async with client(server, tls_files, transport, interceptors=[Answering()]) as c:
        reply = await c.say_hello(HelloRequest(name="a"), timeout=5)
    assert reply.message == "from the interceptor"


class SyncTagging(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        self.methods.append(client_call_details.method)
        return continuation(client_call_details, request)


async def test_blocking_interceptors_wrap_each_channel(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
) -> None:
    server = await start(greeter)
    tagging = SyncTagging()

    def call() -> str:
        with GreeterSyncClient(
            f"static:///{server.address}@{NODE}",
            node=NODE,
            probe_nodes=False,
            ca_file=str(tls_files.ca),
            interceptors=[tagging],
        ) as c:
            return c.say_hello(HelloRequest(name="a"), timeout=5).message

    assert await asyncio.to_thread(call) == "Hello, a!"
    assert tagging.methods == ["/greeter.v1.Greeter/SayHello"]


def test_interceptors_of_the_wrong_kind_are_refused_naming_the_option() -> None:
    target = "static:///127.0.0.1:1@n"
    with pytest.raises(TypeError, match=r"interceptors\[0\]=.*not one of grpc\.aio client"):
        GreeterClient(target, interceptors=[SyncTagging()])
    with pytest.raises(TypeError, match=r"interceptors\[0\]=.*not one of grpc client"):
        GreeterSyncClient(target, interceptors=[Tagging()])
    with pytest.raises(TypeError, match=r"interceptors='x': not a list"):
        GreeterClient(target, interceptors="x")


class ClientStreamTagging(_Tag, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class BidiTagging(_Tag, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


@pytest.mark.parametrize("transport", ["h2", "h3", "auto"])
async def test_streamed_requests_go_through_their_interceptors(
    start: StartServer,  # noqa: F811
    greeter: Any,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    transport: str,
) -> None:
    server = await start(greeter)
    methods: list[str] = []
    interceptors = [ClientStreamTagging(methods), BidiTagging(methods)]
    async with client(server, tls_files, transport, interceptors=interceptors) as c:
        total = await c.lots_of_greetings(HelloRequest(name=n) for n in ["ab", "c"])
        bidi = [r.message async for r in c.bidi_hello(HelloRequest(name=n) for n in "pq")]
    assert total.message == "2:3"
    assert bidi == ["Hello, p!", "Hello, q!"]
    assert methods == ["/greeter.v1.Greeter/LotsOfGreetings", "/greeter.v1.Greeter/BidiHello"]
