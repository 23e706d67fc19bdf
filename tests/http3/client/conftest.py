"""HTTP/3 client tests: the generated Greeter served by the real bootstrap with ``http3=True``.

In-process servers (``start``) run a test servicer with knobs driven by the
request name; replica processes (``h3_cluster``) run ``demo.replica --http3``.
TLS files come from ``tests.support.certs`` (a CA and a leaf with IP SANs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from greeter.v1.greeter_localfirst import GreeterServicer, start_server
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from demo.cluster import ReplicaProcess
from protoc_gen_localfirst.runtime import Server, ServicerContext
from tests.support.certs import TlsFiles, tls_files  # noqa: F401
from tests.support.cluster import start_all

NODE = "node-h3"


class Greeter(GreeterServicer):
    """What the tests need from a server, chosen by ``HelloRequest.name``.

    ``sleep:<s>`` sleeps, ``size:<n>`` answers ``n`` bytes, ``echo-metadata``
    sends the request metadata back in headers and trailers, ``forever``
    (LotsOfReplies) streams until cancelled and records the cancellation.
    """

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()

    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        kind, _, arg = request.name.partition(":")
        if kind == "sleep":
            await asyncio.sleep(float(arg))
        if kind == "size":
            return HelloReply(message="x" * int(arg), node=NODE)
        if kind == "echo-metadata":
            pairs = [(k, v) for k, v in context.invocation_metadata() or () if k.startswith("x-")]
            await context.send_initial_metadata(pairs)
            context.set_trailing_metadata(pairs)
        return HelloReply(message=f"Hello, {request.name}!", node=NODE, replica="h3")

    async def LotsOfReplies(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> AsyncIterator[HelloReply]:
        if request.name == "forever":
            self.started.set()
            try:
                for i in itertools.count():
                    yield HelloReply(message=str(i), node=NODE)
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        count = request.count if request.HasField("count") else 1
        for i in range(count):
            yield HelloReply(message=f"{request.name} {i}", node=NODE)

    async def LotsOfGreetings(
        self,
        request_iterator: AsyncIterator[HelloRequest],
        context: ServicerContext[HelloRequest, HelloReply],
    ) -> HelloReply:
        names = [request.name async for request in request_iterator]
        return HelloReply(message=f"{len(names)}:{sum(len(n) for n in names)}", node=NODE)

    async def BidiHello(
        self,
        request_iterator: AsyncIterator[HelloRequest],
        context: ServicerContext[HelloRequest, HelloReply],
    ) -> AsyncIterator[HelloReply]:
        async for request in request_iterator:
            yield HelloReply(message=f"Hello, {request.name}!", node=NODE)


_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(51, 60))


@pytest.fixture
def host() -> str:
    return next(_hosts)


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start(host: str, tls_files: TlsFiles) -> AsyncIterator[StartServer]:  # noqa: F811
    """``await start(servicer, http3=True, **options)``: a started server on TLS (both
    transports, ``tls=False`` for plaintext HTTP/2), stopped at teardown."""
    servers: list[Server] = []

    async def _start(
        servicer: object, *, http3: bool = True, tls: bool = True, **options: Any
    ) -> Server:
        options.setdefault("host", host)
        options.setdefault("port", 0)
        options.setdefault("node", NODE)
        options.setdefault("drain_delay", 0.0)
        options.setdefault("grace", 0.5)
        if tls:
            options.update(certfile=str(tls_files.cert), keyfile=str(tls_files.key))
        options["http3"] = http3
        server = await start_server(servicer, **options)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(0)


@pytest.fixture
def greeter() -> Greeter:
    return Greeter()


@pytest.fixture
async def server(start: StartServer, greeter: Greeter) -> Server:
    return await start(greeter)


@pytest.fixture
def h3_cluster(tmp_path: Path, tls_files: TlsFiles) -> Iterator[list[ReplicaProcess]]:  # noqa: F811
    """Three replica processes serving HTTP/2 and HTTP/3: a1 on node-a, b1 and b2 on node-b."""
    tls = ("--http3", "--certfile", str(tls_files.cert), "--keyfile", str(tls_files.key))
    replicas = [
        ReplicaProcess(name, node, host, extra_args=tls, log_dir=tmp_path, ca_file=tls_files.ca)
        for name, node, host in (
            ("greeter-a1", "node-a", "127.0.0.61"),
            ("greeter-b1", "node-b", "127.0.0.62"),
            ("greeter-b2", "node-b", "127.0.0.63"),
        )
    ]
    try:
        start_all(replicas)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
