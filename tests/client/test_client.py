"""The client cores against real grpc.aio servers on loopback addresses.

Every test runs for the asyncio client and for the blocking client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime import AsyncClient, SyncClient
from protoc_gen_localfirst.runtime.client.balancer import EjectionPolicy
from protoc_gen_localfirst.runtime.client.errors import CallFailedError
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY, RetryPolicy
from tests.client.conftest import static_target
from tests.client.echo import BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY, Replica

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01)
CALL = {"timeout": 5.0, "metadata": None, "retry": None}


class Caller:
    """The same four calls through either client core."""

    def __init__(self, kind: str, target: str, **options: Any) -> None:
        self.kind = kind
        options.setdefault("retry", FAST)
        if kind == "async":
            self.aio: AsyncClient | None = AsyncClient(target, **options)
            self.sync: SyncClient | None = None
        else:
            self.aio, self.sync = None, SyncClient(target, **options)

    async def unary(self, value: str = "x", **call: Any) -> str:
        kw = {**CALL, **call}
        if self.aio:
            return (await self.aio._unary_unary(UNARY, StringValue(value=value), **kw)).value
        assert self.sync
        return (
            await asyncio.to_thread(self.sync._unary_unary, UNARY, StringValue(value=value), **kw)
        ).value

    async def server_stream(self, count: int) -> list[str]:
        request = StringValue(value=str(count))
        if self.aio:
            return [r.value async for r in self.aio._unary_stream(SERVER_STREAM, request, **CALL)]
        assert self.sync
        sync = self.sync
        return await asyncio.to_thread(
            lambda: [r.value for r in sync._unary_stream(SERVER_STREAM, request, **CALL)]
        )

    async def client_stream(self, values: list[str]) -> str:
        requests = [StringValue(value=v) for v in values]
        if self.aio:
            return (await self.aio._stream_unary(CLIENT_STREAM, iter(requests), **CALL)).value
        assert self.sync
        return (
            await asyncio.to_thread(self.sync._stream_unary, CLIENT_STREAM, iter(requests), **CALL)
        ).value

    async def bidi(self, values: list[str]) -> list[str]:
        requests = [StringValue(value=v) for v in values]
        if self.aio:
            return [r.value async for r in self.aio._stream_stream(BIDI, iter(requests), **CALL)]
        assert self.sync
        sync = self.sync
        return await asyncio.to_thread(
            lambda: [r.value for r in sync._stream_stream(BIDI, iter(requests), **CALL)]
        )

    async def close(self) -> None:
        if self.aio:
            await self.aio.close()
        if self.sync:
            self.sync.close()


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_every_kind_of_call_goes_to_the_callers_node_first(
    replicas: list[Replica], kind: str
) -> None:
    caller = Caller(kind, static_target(replicas), node="node-b")
    try:
        assert await caller.unary("hi") == "node-b:hi"
        assert await caller.server_stream(3) == ["node-b:0", "node-b:1", "node-b:2"]
        assert await caller.client_stream(["a", "b"]) == "node-b:a,b"
        assert await caller.bidi(["a", "b"]) == ["node-b:a", "node-b:b"]
    finally:
        await caller.close()
    assert replicas[0].behaviour.calls == replicas[2].behaviour.calls == []


async def test_unavailable_fails_over_to_the_next_replica(
    replicas: list[Replica], kind: str
) -> None:
    replicas[0].behaviour.unavailable_next = 1
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        assert (await caller.unary()).split(":")[0] in {"node-b", "node-c"}
    finally:
        await caller.close()
    assert replicas[0].behaviour.calls == ["Unary"]


async def test_dead_local_replica_costs_no_failed_call_and_traffic_returns(
    replicas: list[Replica], kind: str
) -> None:
    local = replicas[0]
    caller = Caller(
        kind, static_target(replicas), node="node-a", ejection=EjectionPolicy(0.05, 0.2)
    )
    try:
        assert await caller.unary() == "node-a:x"
        local.stop()
        answered = [await caller.unary() for _ in range(20)]
        assert all(not a.startswith("node-a") for a in answered)
        local.start()  # same address and port, like a restarted container
        for _ in range(200):
            if (await caller.unary()).startswith("node-a"):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("traffic never returned to the restarted local replica")
    finally:
        await caller.close()


async def test_all_replicas_down_names_every_endpoint_tried(
    replicas: list[Replica], kind: str
) -> None:
    for replica in replicas:
        replica.stop()
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        with pytest.raises(CallFailedError) as failure:
            await caller.unary(timeout=1.0)
    finally:
        await caller.close()
    error = failure.value
    assert isinstance(error, grpc.RpcError)
    # Connections refused: the request never left, so the call kept trying
    # (transparent retries) until its deadline, never failing early.
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = error.details() or ""
    assert details.startswith("/test.Echo/Unary: deadline of 1.0s exceeded after ")
    for replica in replicas:
        assert f"{replica.host}:{replica.port} ({replica.node})" in details
    nodes = [a.endpoint.node for a in error.attempts]
    assert nodes[0] == "node-a" and set(nodes[1:3]) == {"node-b", "node-c"}
    assert len(nodes) > 3  # round after round, with backoff, until the deadline


async def test_an_answer_of_the_service_is_not_retried(replicas: list[Replica], kind: str) -> None:
    replicas[0].behaviour.app_error = True
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        with pytest.raises(grpc.RpcError) as failure:
            await caller.unary()
    finally:
        await caller.close()
    assert not isinstance(failure.value, CallFailedError)  # raised unchanged
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert failure.value.details() == "node-a rejects this"  # type: ignore[attr-defined]
    assert replicas[1].behaviour.calls == replicas[2].behaviour.calls == []


async def test_no_retry_once_response_headers_arrived(replicas: list[Replica], kind: str) -> None:
    replicas[0].behaviour.unavailable_after_headers = True
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        with pytest.raises(grpc.RpcError) as failure:
            await caller.unary()
    finally:
        await caller.close()
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert replicas[0].behaviour.calls == ["Unary"]
    assert replicas[1].behaviour.calls == replicas[2].behaviour.calls == []


async def test_streamed_requests_are_replayed_to_the_next_replica(
    replicas: list[Replica], kind: str
) -> None:
    replicas[0].behaviour.unavailable_next = 1
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        answer = await caller.client_stream(["1", "2", "3"])
    finally:
        await caller.close()
    assert answer.endswith(":1,2,3") and not answer.startswith("node-a")
    assert replicas[0].behaviour.received == [["1", "2", "3"]]


async def test_server_stream_fails_over_before_its_first_message(
    replicas: list[Replica], kind: str
) -> None:
    replicas[0].behaviour.unavailable_next = 1
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        got = await caller.server_stream(2)
    finally:
        await caller.close()
    assert len(got) == 2 and got[0].split(":")[0] == got[1].split(":")[0] != "node-a"


async def test_bidi_fails_over_before_its_first_response(
    replicas: list[Replica], kind: str
) -> None:
    replicas[0].behaviour.unavailable_next = 1
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        got = await caller.bidi(["p", "q"])
    finally:
        await caller.close()
    assert [g.split(":")[1] for g in got] == ["p", "q"]
    assert got[0].split(":")[0] != "node-a"


async def test_per_call_retry_override_wins(replicas: list[Replica], kind: str) -> None:
    replicas[0].behaviour.unavailable_next = 1
    caller = Caller(kind, static_target(replicas), node="node-a")
    try:
        with pytest.raises(CallFailedError, match="all 1 attempt failed"):
            await caller.unary(retry=NO_RETRY)
    finally:
        await caller.close()


async def test_deadline_spans_all_attempts(replicas: list[Replica], kind: str) -> None:
    for replica in replicas:
        replica.behaviour.unavailable_next = 100
    slow = RetryPolicy(max_attempts=5, initial_backoff=10.0, max_backoff=10.0, backoff_multiplier=1)
    caller = Caller(kind, static_target(replicas), node="node-a", retry=slow)
    try:
        with pytest.raises(CallFailedError) as failure:
            await caller.unary(timeout=0.5)
    finally:
        await caller.close()
    # A backoff of up to 10 s cannot fit in 0.5 s: the call gives up instead of
    # sleeping past its deadline, unless the jitter drew a short wait.
    assert len(failure.value.attempts) < 5


def test_max_attempts_is_capped_at_five() -> None:
    assert RetryPolicy(max_attempts=9).max_attempts == 5
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
