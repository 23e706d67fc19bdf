"""Spill-over with real servers: the caller's node is busy, calls go next door.

Two Greeter replicas started with the real bootstrap on loopback addresses:
``node-a`` (the caller's node) with admission control and a handler that
holds ``hold-*`` calls until released, and ``node-b``. ``SayHello`` has no
idempotency option (unknown): a client may send it again only where the
server proved it did not run it, as an overloaded refusal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from greeter.v1.greeter_localfirst import (
    GREETER_SERVICE,
    GreeterClient,
    GreeterServicer,
    GreeterSyncClient,
    start_server,
)
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

from protoc_gen_localfirst.runtime import Server, ServicerContext
from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.load import LocalityPolicy
from protoc_gen_localfirst.runtime.client.observers import BaseObserver, ClientStats
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import Idempotency
from tests.support.certs import TlsFiles, tls_files  # noqa: F401
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.timeout(60)

SAY_HELLO = "/greeter.v1.Greeter/SayHello"

_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(81, 99))
"""Inside the test certificate's SANs (HTTP/3 verifies them)."""


class Replica(GreeterServicer):
    """Answers with its node; ``hold-*`` calls wait until ``release`` is set."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.ran: list[str] = []
        self.holding = 0
        self.release = asyncio.Event()

    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        self.ran.append(request.name)
        if request.name.startswith("hold"):
            self.holding += 1
            try:
                await self.release.wait()
            finally:
                self.holding -= 1
        return HelloReply(message=f"Hello, {request.name}!", node=self.node)


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.spills: list[tuple[str, str]] = []
        self.attempts: list[tuple[str, int]] = []
        """(node of the endpoint, attempt number) of every attempt."""

    def on_spill(self, method: str, reason: str) -> None:
        self.spills.append((method, reason))

    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        self.attempts.append((endpoint.node or "?", attempt))


@dataclass
class Caller:
    """The asyncio or the blocking client behind one async ``say``."""

    say: Callable[[str], Awaitable[HelloReply]]
    stats: ClientStats
    balancer: Balancer
    recorder: Recorder


@dataclass
class Setup:
    local: Replica
    remote: Replica
    caller: Caller
    local_server: Server


Make = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def make(
    request: pytest.FixtureRequest,
    tls_files: TlsFiles,  # noqa: F811
) -> AsyncIterator[Make]:
    """``await make(admission=N, locality=...)``: both replicas and a client on node-a.

    The fixture's parameter picks the client: ``async`` (HTTP/2), ``sync``
    (HTTP/2, calls in threads) or ``async-h3`` (HTTP/3).
    """
    kind: str = request.param
    h3 = kind == "async-h3"
    servers: list[Server] = []
    async_clients: list[GreeterClient] = []
    sync_clients: list[GreeterSyncClient] = []
    executor = ThreadPoolExecutor(max_workers=16)

    async def _make(*, admission: int, locality: LocalityPolicy | None = None) -> Setup:
        local, remote = Replica("node-a"), Replica("node-b")
        options: dict[str, Any] = {"port": 0, "drain_delay": 0.0, "grace": 0.5}
        if h3:
            options.update(http3=True, certfile=str(tls_files.cert), keyfile=str(tls_files.key))
        local_server = await start_server(
            local, host=next(_hosts), node="node-a", admission=admission, **options
        )
        servers.append(local_server)
        remote_server = await start_server(remote, host=next(_hosts), node="node-b", **options)
        servers.append(remote_server)
        target = (
            f"static:///{local_server.host}:{local_server.port}@node-a,"
            f"{remote_server.host}:{remote_server.port}@node-b"
        )
        recorder = Recorder()
        common: dict[str, Any] = {
            "node": "node-a",
            "observers": [recorder],
            "locality": locality,
            "probe_nodes": False,
        }
        caller: Caller
        if kind == "sync":
            sync_client = GreeterSyncClient(target, **common)
            sync_clients.append(sync_client)
            loop = asyncio.get_running_loop()

            async def say_sync(name: str) -> HelloReply:
                request = HelloRequest(name=name)
                return await loop.run_in_executor(
                    executor, lambda: sync_client.say_hello(request, timeout=20)
                )

            caller = Caller(say_sync, sync_client.stats, sync_client.balancer, recorder)
        else:
            if h3:
                common.update(transport="h3", ca_file=str(tls_files.ca))
            async_client = GreeterClient(target, **common)
            async_clients.append(async_client)

            async def say_async(name: str) -> HelloReply:
                return await async_client.say_hello(HelloRequest(name=name), timeout=20)

            caller = Caller(say_async, async_client.stats, async_client.balancer, recorder)
        return Setup(local, remote, caller, local_server)

    yield _make
    for client in async_clients:
        await client.close()
    for sync_client in sync_clients:
        await asyncio.get_running_loop().run_in_executor(executor, sync_client.close)
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(0)
    executor.shutdown(wait=False, cancel_futures=True)


CLIENTS = ["async", "sync", "async-h3"]


def test_say_hello_is_not_known_to_be_idempotent() -> None:
    """The premise: only a proof that node-a did not run a call lets it go elsewhere."""
    (say_hello,) = (m for m in GREETER_SERVICE.methods if m.path == SAY_HELLO)
    assert say_hello.idempotency == Idempotency.IDEMPOTENCY_UNKNOWN


def _release_all(setup: Setup) -> None:
    setup.local.release.set()
    setup.remote.release.set()


@pytest.mark.parametrize("make", CLIENTS, indirect=True)
async def test_refused_calls_are_answered_next_door_and_never_ran_locally(make: Make) -> None:
    setup = await make(admission=1)
    caller, local, remote = setup.caller, setup.local, setup.remote
    held = asyncio.ensure_future(caller.say("hold-0"))
    try:
        await wait_until_async(lambda: local.holding == 1, what="node-a to hold hold-0")
        names = [f"call-{i}" for i in range(4)]
        # Concurrently, while node-a's only slot is taken: none may fail.
        replies = await asyncio.gather(*(caller.say(name) for name in names))
    finally:
        _release_all(setup)
    assert (await held).node == "node-a"

    assert [reply.node for reply in replies] == ["node-b"] * len(names)
    assert local.ran == ["hold-0"]  # the local handler never ran a refused call
    assert sorted(remote.ran) == names  # each ran exactly once, next door
    stats, recorder = caller.stats, caller.recorder
    # Every attempt at node-a but hold-0's was refused there (it never ran them).
    refused = sum(1 for node, _ in recorder.attempts if node == "node-a") - 1
    assert refused >= 1
    assert stats.spills_refused == refused
    assert recorder.spills.count((SAY_HELLO, "refused")) == refused
    assert stats.throttled == 0  # refusals cost no retry tokens


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            kind,
        )
        for kind in ("async", "sync")
    ]
    + ["async-h3"],
    indirect=True,
)
async def test_a_report_showing_the_local_replica_full_spills_the_next_call(make: Make) -> None:
    setup = await make(admission=2, locality=LocalityPolicy(report_ttl=60.0))
    caller, local = setup.caller, setup.local
    holds: list[asyncio.Future[HelloReply]] = []
    try:
        holds.append(asyncio.ensure_future(caller.say("hold-1")))
        await wait_until_async(lambda: local.holding == 1, what="node-a to hold hold-1")
        # Answered by node-a with a report: 2 of 2 in flight (hold-1 and itself).
        assert (await caller.say("quick")).node == "node-a"
        holds.append(asyncio.ensure_future(caller.say("hold-2")))  # fills node-a
        await wait_until_async(lambda: local.holding == 2, what="node-a to hold hold-2")
        spilled = await caller.say("next")
    finally:
        _release_all(setup)
    assert [(await hold).node for hold in holds] == ["node-a", "node-a"]

    assert spilled.node == "node-b"
    assert "next" not in local.ran
    assert caller.stats.spills_full == 1
    assert caller.stats.spills_refused == 0  # it did not need a refusal to move on
    assert caller.recorder.spills == [(SAY_HELLO, "full")]
    # Both holds ended with reports showing room: node-a takes calls again.
    assert (await caller.say("after")).node == "node-a"
    assert caller.stats.spills_full == 1


@pytest.mark.parametrize("make", ["async"], indirect=True)
async def test_a_refusal_does_not_eject_the_local_replica(make: Make) -> None:
    setup = await make(admission=1)
    caller, local = setup.caller, setup.local
    held = asyncio.ensure_future(caller.say("hold-0"))
    try:
        await wait_until_async(lambda: local.holding == 1, what="node-a to hold hold-0")
        assert (await caller.say("refused")).node == "node-b"
    finally:
        _release_all(setup)
    await held
    assert caller.stats.spills_refused == 1
    assert caller.stats.ejections == 0
    local_endpoint = next(e for e in caller.balancer.endpoints if e.node == "node-a")
    assert not caller.balancer.is_ejected(local_endpoint)
