"""The channel pool: one channel per endpoint, retired and replaced channels closed
only once the calls in flight on them have ended."""

from __future__ import annotations

from typing import Any

from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.channels import ChannelPool
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodKind

A = Endpoint("10.0.0.1", 1, node="node-a")
B = Endpoint("10.0.0.2", 1, node="node-b")
METHOD: MethodInfo[Any, Any] = MethodInfo(
    "t.S", "M", MethodKind.UNARY_UNARY, StringValue, StringValue, Idempotency.IDEMPOTENT
)


class FakeChannel:
    """Stands in for a grpc channel: names its endpoint and generation."""

    def __init__(self, endpoint: Endpoint, generation: int) -> None:
        self.name = f"{endpoint.host}#{generation}"

    def unary_unary(self, path: str, **serializers: Any) -> str:
        return f"{self.name}{path}"

    def __repr__(self) -> str:
        return self.name


class Pool:
    def __init__(self) -> None:
        self.generation = 0
        self.closed: list[str] = []
        self.pool: ChannelPool[FakeChannel] = ChannelPool(
            self._new, lambda channels: self.closed.extend(c.name for c in channels)
        )

    def _new(self, endpoint: Endpoint) -> FakeChannel:
        return FakeChannel(endpoint, self.generation)


def test_a_channel_is_made_once_per_endpoint_and_its_callable_cached() -> None:
    p = Pool()
    first = p.pool.acquire(A, METHOD)
    p.pool.release(first)
    again = p.pool.acquire(A, METHOD)
    assert again is first and first[1] == "10.0.0.1#0/t.S/M"
    assert p.pool.acquire(B, METHOD)[0] is not first[0]


def test_renew_replaces_channels_and_closes_the_old_one_when_its_calls_end() -> None:
    p = Pool()
    old_call = p.pool.acquire(A, METHOD)  # in flight across the renewal
    p.generation = 1
    p.pool.renew()
    new_call = p.pool.acquire(A, METHOD)
    assert new_call[1] == "10.0.0.1#1/t.S/M"
    p.pool.release(new_call)
    p.pool.close_idle()
    assert p.closed == []  # the old channel still carries a call
    # Calls on the new channel come and go: they do not count for the old one.
    for _ in range(3):
        p.pool.release(p.pool.acquire(A, METHOD))
    assert p.closed == []
    p.pool.release(old_call)
    assert p.closed == ["10.0.0.1#0"]
    assert not p.pool.closing_due


def test_a_replaced_channel_is_not_revived_when_discovery_lists_its_endpoint() -> None:
    p = Pool()
    p.pool.release(p.pool.acquire(A, METHOD))
    p.pool.keep_only({"10.0.0.2"})  # A leaves: retired
    p.generation = 1
    p.pool.renew()  # retired channels are replaced too
    p.pool.keep_only({"10.0.0.1"})  # A is back
    lease = p.pool.acquire(A, METHOD)
    assert lease[0].name == "10.0.0.1#1"
    p.pool.release(lease)
    assert p.closed == ["10.0.0.1#0"]


def test_a_retired_channel_comes_back_with_its_endpoint() -> None:
    p = Pool()
    lease = p.pool.acquire(A, METHOD)
    p.pool.keep_only(set())
    p.pool.keep_only({"10.0.0.1"})
    assert p.pool.acquire(A, METHOD)[0] is lease[0]
    p.pool.keep_only(set())
    p.pool.release(lease)
    assert p.closed == []  # one call still in flight on it
    p.pool.release(lease)
    assert p.closed == ["10.0.0.1#0"]
