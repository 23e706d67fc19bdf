"""Local-first routing and failover with the generated client and bootstrap.

Replicas are real processes serving the committed generated code on
127.0.0.x addresses, labelled with simulated node names.
"""

from __future__ import annotations

import asyncio
import collections
import signal

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient, GreeterSyncClient
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest, WhoAmIRequest

from demo.cluster import ReplicaProcess, static_target
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


async def _steady_calls(
    client: GreeterClient, stop: asyncio.Event, answers: list[HelloReply | Exception]
) -> None:
    while not stop.is_set():
        try:
            answers.append(await client.say_hello(HelloRequest(name="steady"), timeout=5))
        except grpc.RpcError as error:
            answers.append(error)
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "drain"])
async def test_local_replica_dies_and_returns_without_a_failed_call(
    cluster: list[ReplicaProcess], sig: signal.Signals
) -> None:
    local = cluster[0]
    answers: list[HelloReply | Exception] = []
    stop = asyncio.Event()
    async with GreeterClient(static_target(cluster), node="node-a") as client:
        workers = [asyncio.create_task(_steady_calls(client, stop, answers)) for _ in range(4)]
        try:
            await asyncio.sleep(0.3)
            before = len(answers)
            await asyncio.to_thread(local.kill, sig)
            killed_at = len(answers)
            await asyncio.sleep(1.0)
            during = answers[killed_at:]
            await asyncio.to_thread(local.start)
            back_at = len(answers)
            for _ in range(400):
                await asyncio.sleep(0.01)
                if any(isinstance(a, HelloReply) and a.node == "node-a" for a in answers[back_at:]):
                    break
        finally:
            stop.set()
            await asyncio.gather(*workers)
    failed = [a for a in answers if isinstance(a, Exception)]
    assert failed == [], f"{len(failed)} of {len(answers)} calls failed: {failed[:3]}"
    first = answers[:before]
    assert first and all(isinstance(a, HelloReply) and a.node == "node-a" for a in first)
    # After the kill had taken effect, calls were answered on node-b.
    late = collections.Counter(
        a.replica for a in during[len(during) // 2 :] if isinstance(a, HelloReply)
    )
    assert set(late) == {"greeter-b1", "greeter-b2"}, late
    returned = [a for a in answers[back_at:] if isinstance(a, HelloReply) and a.node == "node-a"]
    assert returned, "no call went back to the restarted local replica"


async def test_all_replicas_down_gives_a_clear_error(cluster: list[ReplicaProcess]) -> None:
    for replica in cluster:
        replica.kill()
    async with GreeterClient(static_target(cluster), node="node-a") as client:
        with pytest.raises(CallFailedError) as failure:
            await client.say_hello(HelloRequest(name="anyone"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failure.value.details() or ""
    assert details.startswith("/greeter.v1.Greeter/SayHello: all 4 attempts failed; tried ")
    for replica in cluster:
        assert f"{replica.address} ({replica.node})" in details
