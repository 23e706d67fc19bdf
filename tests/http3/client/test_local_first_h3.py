"""The local-first scenarios of tests/integration, over HTTP/3.

Replicas are real ``python -m demo.replica --http3`` processes on 127.0.0.6x,
serving HTTP/2 and HTTP/3 on one port number; the client uses
``transport="h3"``, so every call goes over QUIC.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from greeter.v1.greeter_localfirst import GreeterClient
from greeter.v1.greeter_pb2 import HelloRequest

from demo.cluster import ReplicaProcess, static_target
from demo.load import Load
from protoc_gen_localfirst.runtime import CallFailedError
from protoc_gen_localfirst.runtime.http3.client import H3Channel
from tests.support.certs import TlsFiles

pytestmark = pytest.mark.integration


def h3_client(cluster: list[ReplicaProcess], tls: TlsFiles) -> GreeterClient:
    return GreeterClient(static_target(cluster), node="node-a", transport="h3", ca_file=str(tls.ca))


async def test_every_kind_of_call_lands_on_the_callers_node(
    h3_cluster: list[ReplicaProcess], tls_files: TlsFiles
) -> None:
    async with h3_client(h3_cluster, tls_files) as client:
        unary = await client.say_hello(HelloRequest(name="u"), timeout=5)
        stream = [r async for r in client.lots_of_replies(HelloRequest(name="s", count=3))]
        client_stream = await client.lots_of_greetings(HelloRequest(name=n) for n in "xyz")
        bidi = [r async for r in client.bidi_hello(HelloRequest(name=n) for n in "pq")]
        channels = list(client.channels.active.values())
    replies = [unary, *stream, client_stream, *bidi]
    assert {(r.node, r.replica) for r in replies} == {("node-a", "greeter-a1")}
    assert client_stream.message == "Hello, x and y and z!"
    assert [r.message for r in bidi] == ["Hello, p!", "Hello, q!"]
    assert channels and all(isinstance(c, H3Channel) for c in channels)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "drain"])
async def test_local_replica_dies_and_returns_without_a_failed_call(
    h3_cluster: list[ReplicaProcess], tls_files: TlsFiles, sig: signal.Signals
) -> None:
    local = h3_cluster[0]
    async with (
        h3_client(h3_cluster, tls_files) as client,
        Load.steady(client, rpc="who_am_i") as load,
        Load.steady(client, workers=2) as writes,
    ):
        await load.wait_for(lambda r: r.node == "node-a", since=0)
        killed = time.monotonic()
        await asyncio.to_thread(local.kill, sig)
        exited = time.monotonic()
        await asyncio.sleep(1.0)  # scenario: the local replica stays down 1 s under load
        restarted = time.monotonic()
        await asyncio.to_thread(local.start)
        back_after = await load.wait_for(lambda r: r.node == "node-a", since=restarted)
    assert load.failures() == [], (
        f"{len(load.failures())} of {len(load.calls)} reads failed: {load.failures()[:3]}"
    )
    # Non-idempotent writes in flight at a crash may fail (outcome unknown); none on a drain.
    if sig == signal.SIGKILL:
        writes.assert_only_in_flight_calls_failed(kills=1)
    else:
        assert writes.failures() == []
    before = load.replies_before(killed)
    assert before and {r.node for r in before} == {"node-a"}
    # Calls started once the process had exited (a worker stamps "ended" when it resumes,
    # which can be after `exited` for a reply a1 sent before it died).
    between = [c.reply for c in load.calls if c.ok and exited <= c.started < restarted]
    assert between and {r.replica for r in between} <= {"greeter-b1", "greeter-b2"}
    print(
        f"\n{sig.name}: {len(load.calls)} calls, 0 failed; local traffic back {back_after:.2f}s after restart"
    )


async def test_all_replicas_down_gives_a_clear_error(
    h3_cluster: list[ReplicaProcess], tls_files: TlsFiles
) -> None:
    for replica in h3_cluster:
        replica.kill()
    async with h3_client(h3_cluster, tls_files) as client:
        with pytest.raises(CallFailedError) as failure:
            await client.say_hello(HelloRequest(name="anyone"), timeout=2)
    # Every connection refused: nothing was sent, so the call kept trying (transparent
    # retries, re-resolving, waiting for new endpoints) until its deadline.
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = failure.value.details() or ""
    assert details.startswith("/greeter.v1.Greeter/SayHello: deadline of 2s exceeded after ")
    for replica in h3_cluster:
        assert f"{replica.address} ({replica.node})" in details
    assert "HTTP/3" in details
