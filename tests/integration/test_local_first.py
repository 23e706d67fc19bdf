"""Local-first routing and failover with the generated client and bootstrap.

Replicas are real processes serving the committed generated code on
127.0.0.x addresses, labelled with simulated node names.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloRequest, WhoAmIRequest

from demo.cluster import ReplicaProcess, static_target
from demo.load import Load
from protoc_gen_localfirst.runtime import CallFailedError

pytestmark = pytest.mark.integration


async def test_every_kind_of_call_lands_on_the_callers_node(cluster: list[ReplicaProcess]) -> None:
    async with GreeterClient(static_target(cluster), node="node-a") as client:
        unary = await client.say_hello(HelloRequest(name="u"), timeout=5)
        stream = [r async for r in client.lots_of_replies(HelloRequest(name="s", count=3))]
        client_stream = await client.lots_of_greetings(HelloRequest(name=n) for n in "xyz")
        bidi = [r async for r in client.bidi_hello(HelloRequest(name=n) for n in "pq")]
    replies = [unary, *stream, client_stream, *bidi]
    assert {(r.node, r.replica) for r in replies} == {("node-a", "greeter-a1")}
    assert client_stream.message == "Hello, x and y and z!"
    assert [r.message for r in bidi] == ["Hello, p!", "Hello, q!"]


def test_sync_client_every_kind_lands_on_the_callers_node(cluster: list[ReplicaProcess]) -> None:
    with GreeterSyncClient(static_target(cluster), node="node-b") as client:
        replies = [
            client.say_hello(HelloRequest(name="u"), timeout=5),
            *client.lots_of_replies(HelloRequest(name="s", count=2)),
            client.lots_of_greetings(iter([HelloRequest(name="x")])),
            *client.bidi_hello(iter([HelloRequest(name="p")])),
            client.who_am_i(WhoAmIRequest()),
        ]
    assert {r.node for r in replies} == {"node-b"}
    assert {r.replica for r in replies} <= {"greeter-b1", "greeter-b2"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "drain"])
async def test_local_replica_dies_and_returns_without_a_failed_call(
    cluster: list[ReplicaProcess], sig: signal.Signals
) -> None:
    """Reads (WhoAmI, no side effects) never fail. Writes (SayHello, not idempotent)
    never fail on a drain; on a crash only those in flight at the kill may, because
    their outcome is unknown and retrying them could run them twice."""
    local = cluster[0]
    async with (
        GreeterClient(static_target(cluster), node="node-a") as client,
        Load.steady(client, rpc="who_am_i") as reads,
        Load.steady(client, workers=2) as writes,
    ):
        await reads.wait_for(lambda r: r.node == "node-a", since=0)
        killed = time.monotonic()
        await asyncio.to_thread(local.kill, sig)
        exited = time.monotonic()
        await asyncio.sleep(1.0)  # scenario: the local replica stays down 1 s under load
        restarted = time.monotonic()
        await asyncio.to_thread(local.start)
        await reads.wait_for(lambda r: r.node == "node-a", since=restarted)
    assert reads.failures() == [], f"{len(reads.failures())} of {len(reads.calls)} reads failed"
    if sig == signal.SIGKILL:
        writes.assert_only_in_flight_calls_failed(kills=1)
    else:
        assert writes.failures() == []
    before = reads.replies_before(killed)
    assert before and {r.node for r in before} == {"node-a"}
    # Calls started once the process had exited were answered on node-b. (Not "ended":
    # a worker stamps its end when it resumes, which on a busy loop can be after
    # `exited` for a reply a1 sent before it died.)
    between = [c.reply for c in reads.calls if c.ok and exited <= c.started < restarted]
    assert between and {r.replica for r in between} == {"greeter-b1", "greeter-b2"}


async def test_all_replicas_down_gives_a_clear_error(cluster: list[ReplicaProcess]) -> None:
    for replica in cluster:
        replica.kill()
    async with GreeterClient(static_target(cluster), node="node-a") as client:
        with pytest.raises(CallFailedError) as failure:
            await client.say_hello(HelloRequest(name="anyone"), timeout=2)
    # Every connection refused: nothing was sent, so the call kept trying (transparent
    # retries, re-resolving, waiting for new endpoints) until its deadline.
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = failure.value.details() or ""
    assert details.startswith("/greeter.v1.Greeter/SayHello: deadline of 2s exceeded after ")
    for replica in cluster:
        assert f"{replica.address} ({replica.node})" in details
