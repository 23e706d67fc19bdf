"""The client follows changing endpoint sets: new endpoints, vanished ones, learned nodes.

``ManualSource`` is our own ``EndpointSource`` interface driven by the test
(the DNS and Kubernetes sources have their own tests against real servers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime import STRICT_LOCALITY, AsyncClient, SyncClient
from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, parse_target
from protoc_gen_localfirst.runtime.discovery.source import EndpointSource, Listener
from tests.client.echo import UNARY, Replica
from tests.support.waiting import wait_until_async


class ManualSource(EndpointSource):
    def __init__(self) -> None:
        super().__init__(parse_target("static:///127.0.0.1:1"))
        self.listener: Listener | None = None
        self.refreshes = 0

    def start(self, listener: Listener) -> None:
        self.listener = listener

    def push(self, endpoints: Sequence[Endpoint]) -> None:
        assert self.listener is not None
        self.listener(endpoints)

    def request_refresh(self, *, force: bool = False) -> None:
        self.refreshes += 1

    def close(self) -> None:
        self.listener = None


def unknown_node(replica: Replica) -> Endpoint:
    return Endpoint(replica.host, replica.port)  # as DNS gives it: no node


async def say(client: AsyncClient) -> str:
    reply = await client._unary_unary(
        UNARY, StringValue(value="x"), timeout=5, metadata=None, retry=None
    )
    return reply.value.split(":")[0]


async def test_node_learned_from_response_headers_makes_local_first(
    replicas: list[Replica],
) -> None:
    source = ManualSource()
    # Strict: this is about learning the node. With spill-over on, the local replica's
    # first answer (connection setup included) can look slower than the others' and
    # send a call elsewhere by the latency rule (spills_slow), as designed.
    client = AsyncClient(
        "dns:///greeter.test:1",
        node="node-c",
        source=source,
        probe_nodes=False,
        locality=STRICT_LOCALITY,
    )
    try:
        source.push([unknown_node(r) for r in replicas])
        answered = [await say(client) for _ in range(6)]  # every reply names its node
        first_local = answered.index("node-c")  # within the first 3: calls rotate
        assert first_local < 3 and set(answered[first_local:]) == {"node-c"}, (
            answered,
            client.stats,
        )
        learned = {e.address: e.node for e in client.balancer.endpoints}
        assert learned[f"{replicas[2].host}:{replicas[2].port}"] == "node-c"
    finally:
        await client.close()


async def test_vanished_endpoint_gets_no_calls_and_its_channel_closes(
    replicas: list[Replica],
) -> None:
    source = ManualSource()
    endpoints = [Endpoint(r.host, r.port, node=r.node) for r in replicas]
    client = AsyncClient("dns:///greeter.test:1", node="node-a", source=source)
    try:
        source.push(endpoints)
        assert await say(client) == "node-a"
        channel = client.channels.active[endpoints[0].address]
        source.push(endpoints[1:])  # node-a's replica left the set (redeployed)
        assert {await say(client) for _ in range(4)} == {"node-b", "node-c"}
        await wait_until_async(
            lambda: channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN,
            what="the vanished endpoint's channel to shut down",
            timeout=5,
        )
        assert endpoints[0].address not in client.channels.active
        assert endpoints[0].address not in client.channels.retired
        assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
        source.push(endpoints)  # and came back
        assert await say(client) == "node-a"
    finally:
        await client.close()


async def test_vanished_endpoint_finishes_its_in_flight_call_first(replicas: list[Replica]) -> None:
    source = ManualSource()
    endpoints = [Endpoint(r.host, r.port, node=r.node) for r in replicas]
    client = AsyncClient("dns:///greeter.test:1", node="node-a", source=source)
    try:
        source.push(endpoints)
        assert await say(client) == "node-a"
        channel = client.channels.active[endpoints[0].address]
        replicas[0].behaviour.delay = 0.5
        calls_on_a = len(replicas[0].behaviour.calls)
        in_flight = asyncio.ensure_future(say(client))
        await wait_until_async(  # the call is on node-a now
            lambda: len(replicas[0].behaviour.calls) > calls_on_a,
            what="the call to reach node-a's replica",
            timeout=5,
        )
        source.push(endpoints[1:])
        assert await say(client) != "node-a"  # no new call goes there...
        assert channel.get_state() != grpc.ChannelConnectivity.SHUTDOWN  # ...but it stays open
        assert await in_flight == "node-a"  # the call in flight completes
        await wait_until_async(
            lambda: channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN,
            what="node-a's channel to shut down after its last call",
            timeout=5,
        )
        assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN  # then it closes
    finally:
        await client.close()


async def test_unreachable_endpoint_asks_discovery_to_refresh(replicas: list[Replica]) -> None:
    source = ManualSource()
    client = AsyncClient("dns:///greeter.test:1", node="node-a", source=source)
    try:
        source.push([Endpoint(r.host, r.port, node=r.node) for r in replicas])
        replicas[0].stop()
        assert await say(client) != "node-a"
        assert source.refreshes >= 1
    finally:
        await client.close()


async def test_empty_set_fails_with_the_reason(replicas: list[Replica]) -> None:
    source = ManualSource()
    client = AsyncClient("dns:///greeter.test:1", source=source)
    try:
        source.last_error = "dns:///greeter.test:1: NXDOMAIN"
        source.push([])
        with pytest.raises(CallFailedError) as failure:
            await say(client)
    finally:
        await client.close()
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "dns:///greeter.test:1 currently has no ready endpoints" in str(failure.value.details())
    assert "NXDOMAIN" in str(failure.value.details())


def test_never_resolved_fails_after_the_resolve_timeout() -> None:
    source = ManualSource()
    client = SyncClient("dns:///greeter.test:1", source=source, resolve_timeout=0.2)
    try:
        with pytest.raises(
            CallFailedError, match="no endpoints resolved yet for dns:///greeter.test:1"
        ):
            client._unary_unary(UNARY, StringValue(), timeout=None, metadata=None, retry=None)
    finally:
        client.close()


def test_not_ready_endpoints_get_no_calls(replicas: list[Replica]) -> None:
    source = ManualSource()
    client = SyncClient("dns:///greeter.test:1", node="node-a", source=source)
    try:
        source.push(
            [
                Endpoint(replicas[0].host, replicas[0].port, node="node-a", ready=False),
                Endpoint(replicas[1].host, replicas[1].port, node="node-b"),
            ]
        )
        replies = {
            client._unary_unary(UNARY, StringValue(), timeout=5, metadata=None, retry=None).value
            for _ in range(3)
        }
        assert replies == {"node-b:"}
    finally:
        client.close()
