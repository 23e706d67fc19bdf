"""Issue 5 runtime: policy from the method table, idempotency-aware codes,
throttling, pushback, attempt metadata, per-attempt timeouts, timeout
ejection, hedging and observers, against real grpc.aio echo replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime import (
    AsyncClient,
    BaseObserver,
    CallFailedError,
    EjectionPolicy,
    Idempotency,
    LoggingObserver,
    MethodInfo,
    MethodKind,
    MethodPolicy,
    RetryPolicy,
    RetryThrottling,
    SyncClient,
)
from protoc_gen_localfirst.runtime.client.call import PREVIOUS_ATTEMPTS_KEY
from protoc_gen_localfirst.runtime.client.policy import effective_policy
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottle
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import NO_POLICY
from tests.client.conftest import static_target
from tests.client.echo import Replica
from tests.support.waiting import wait_until_async

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01)
WIDE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def unary(
    idempotency: Idempotency = Idempotency.IDEMPOTENCY_UNKNOWN,
    policy: MethodPolicy = NO_POLICY,
) -> MethodInfo[StringValue, StringValue]:
    """The echo replicas' Unary rpc, as a method table with these facts would describe it."""
    return MethodInfo(
        "test.Echo",
        "Unary",
        MethodKind.UNARY_UNARY,
        StringValue,
        StringValue,
        idempotency=idempotency,
        policy=policy,
    )


async def call(
    client: AsyncClient,
    method: MethodInfo[StringValue, StringValue],
    timeout: float = 5.0,
    retry: RetryPolicy | None = None,
) -> str:
    reply = await client._unary_unary(
        method, StringValue(value="x"), timeout=timeout, metadata=None, retry=retry
    )
    return reply.value


def nodes(*replicas: Replica) -> list[int]:
    return [len(r.behaviour.calls) for r in replicas]


# -- policy precedence -------------------------------------------------------


def test_per_call_beats_proto_beats_client_default() -> None:
    client_default = RetryPolicy(max_attempts=4, initial_backoff=0.5)
    method = unary(policy=MethodPolicy(max_attempts=2, retryable_codes=("UNAVAILABLE", "ABORTED")))
    merged = effective_policy(method, client_default, None)
    assert merged.max_attempts == 2 and merged.initial_backoff == 0.5
    assert merged.retryable_codes == {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
    per_call = RetryPolicy(max_attempts=5)
    assert effective_policy(method, client_default, per_call) is per_call
    assert effective_policy(unary(), client_default, None) is client_default


async def test_proto_policy_applies_and_per_call_override_wins(replicas: list[Replica]) -> None:
    replicas[0].behaviour.unavailable_next = 1
    once = unary(policy=MethodPolicy(max_attempts=1))
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        with pytest.raises(CallFailedError, match="all 1 attempt failed"):
            await call(client, once)
        replicas[0].behaviour.unavailable_next = 1
        assert not (await call(client, once, retry=FAST)).startswith("node-a")


# -- idempotency-aware codes -------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_wider_codes_only_for_idempotent_methods(
    replicas: list[Replica], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = MethodPolicy(retryable_codes=("UNAVAILABLE", "RESOURCE_EXHAUSTED"))
    unknown = unary(Idempotency.IDEMPOTENCY_UNKNOWN, policy)
    idempotent = unary(Idempotency.IDEMPOTENT, policy)
    local = replicas[0].behaviour
    target = static_target(replicas)
    with caplog.at_level(logging.WARNING, "protoc_gen_localfirst.retry"):
        if kind == "async":
            async with AsyncClient(target, node="node-a", retry=FAST) as aclient:
                local.fail_next = 1
                with pytest.raises(grpc.RpcError) as failure:
                    await call(aclient, unknown)
                local.fail_next = 1
                answer = await call(aclient, idempotent)
        else:
            with SyncClient(target, node="node-a", retry=FAST) as sclient:

                def sync_call(method: MethodInfo[StringValue, StringValue]) -> str:
                    return sclient._unary_unary(
                        method, StringValue(value="x"), timeout=5.0, metadata=None, retry=None
                    ).value

                local.fail_next = 1
                with pytest.raises(grpc.RpcError) as failure:
                    await asyncio.to_thread(sync_call, unknown)
                local.fail_next = 1
                answer = await asyncio.to_thread(sync_call, idempotent)
    # Unknown idempotency: RESOURCE_EXHAUSTED came from the application, the
    # request may have done something: not retried, whatever the policy says.
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert not answer.startswith("node-a")  # the idempotent one failed over
    assert nodes(*replicas)[0] == 2 and sum(nodes(*replicas)[1:]) == 1
    warnings = [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage()]
    assert len(warnings) <= 1  # one-time warning (once per process and rpc path)


# -- pushback ----------------------------------------------------------------


async def test_pushback_replaces_the_backoff(replicas: list[Replica]) -> None:
    local = replicas[0].behaviour
    local.fail_next, local.fail_code, local.pushback = 1, grpc.StatusCode.UNAVAILABLE, "300"
    slow = RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0)
    async with AsyncClient(static_target(replicas), node="node-a", retry=slow) as client:
        started = time.monotonic()
        await call(client, unary())
        elapsed = time.monotonic() - started
        assert client.stats.pushbacks == 1 and client.stats.retries == 1
    assert elapsed >= 0.29  # exactly the pushback; the policy's backoff is 0


@pytest.mark.parametrize("value", ["-1", "soon"])
async def test_negative_or_invalid_pushback_means_do_not_retry(
    replicas: list[Replica], value: str
) -> None:
    local = replicas[0].behaviour
    local.fail_next, local.fail_code, local.pushback = 1, grpc.StatusCode.UNAVAILABLE, value
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        with pytest.raises(grpc.RpcError) as failure:
            await call(client, unary())
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert nodes(*replicas) == [1, 0, 0]


# -- attempt metadata --------------------------------------------------------


async def test_retries_carry_the_number_of_previous_attempts(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.behaviour.unavailable_next = 1
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        assert (await call(client, unary())).startswith("node-a")  # the 4th attempt
    first = replicas[0].behaviour.metadata
    assert first[0].get(PREVIOUS_ATTEMPTS_KEY) is None and first[1][PREVIOUS_ATTEMPTS_KEY] == "3"
    others = [m.get(PREVIOUS_ATTEMPTS_KEY) for r in replicas[1:] for m in r.behaviour.metadata]
    assert sorted(others, key=str) == ["1", "2"]


# -- throttling --------------------------------------------------------------


def test_token_bucket_follows_grfc_a6() -> None:
    bucket = RetryThrottle(RetryThrottling(max_tokens=10, token_ratio=0.1))
    for _ in range(5):
        assert bucket.allows_retry()
        bucket.record_failure()
    assert bucket.tokens == 5 and not bucket.allows_retry()  # <= max/2: no retries
    bucket.record_success()
    assert bucket.allows_retry()  # 5.1 > 5
    for _ in range(100):
        bucket.record_success()
    assert bucket.tokens == 10  # capped at max_tokens
    for _ in range(20):
        bucket.record_failure()
    assert bucket.tokens == 0  # never below 0


async def test_an_outage_is_not_multiplied_by_retries(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.behaviour.unavailable_next = 1000
    async with AsyncClient(
        static_target(replicas), node="node-a", retry=FAST, throttling=RetryThrottling(10, 0.1)
    ) as client:
        for _ in range(10):
            with pytest.raises(CallFailedError):
                await call(client, unary())
        stats = client.stats
    # Without throttling: 10 calls x 4 attempts. With it, retries stop once
    # the bucket is at half: 5 failures in, every further call gets 1 attempt.
    assert stats.attempts < 16 and stats.throttled >= 8
    assert sum(nodes(*replicas)) == stats.attempts


async def test_throttling_can_be_turned_off(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.behaviour.unavailable_next = 1000
    async with AsyncClient(
        static_target(replicas), node="node-a", retry=FAST, throttling=False
    ) as client:
        for _ in range(5):
            with pytest.raises(CallFailedError):
                await call(client, unary())
        assert client.stats.attempts == 20


# -- per-attempt timeouts and ejection of slow endpoints ----------------------

ATTEMPT_TIMEOUT = MethodPolicy(
    per_attempt_timeout=0.2,
    retryable_codes=("UNAVAILABLE", "DEADLINE_EXCEEDED"),
    initial_backoff=0.001,
    max_backoff=0.01,
)


async def test_per_attempt_timeout_fails_over_from_a_frozen_replica(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.delay = 30.0  # accepts, never answers in time (SIGSTOP-like)
    method = unary(Idempotency.IDEMPOTENT, ATTEMPT_TIMEOUT)
    ejection = EjectionPolicy(base_time=0.5, max_time=1.0)
    async with AsyncClient(static_target(replicas), node="node-a", ejection=ejection) as client:
        started = time.monotonic()
        assert not (await call(client, method, timeout=5.0)).startswith("node-a")
        assert time.monotonic() - started < 2.0  # one attempt timeout, not the deadline
        assert client.stats.ejections == 1
        # Ejected: the next calls go elsewhere first, without paying the timeout.
        for _ in range(5):
            assert not (await call(client, method)).startswith("node-a")
        assert len(replicas[0].behaviour.calls) == 1
        # Thawed: once the ejection ends, the local replica is first choice again.
        replicas[0].behaviour.delay = 0.0
        await wait_until_async(
            lambda: client.endpoint_order()[0].node == "node-a",
            what="the local replica's ejection (0.5 s) to end",
            timeout=5,
        )
        assert (await call(client, method)).startswith("node-a")


async def test_attempt_timeout_of_a_non_idempotent_method_is_not_retried(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.delay = 2.0
    method = unary(Idempotency.IDEMPOTENCY_UNKNOWN, ATTEMPT_TIMEOUT)
    async with AsyncClient(static_target(replicas), node="node-a") as client:
        with pytest.raises(CallFailedError) as failure:
            await call(client, method, timeout=5.0)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "attempt timeout of 0.2s" in (failure.value.details() or "")
    assert nodes(*replicas) == [1, 0, 0]


# -- hedging -------------------------------------------------------------------

HEDGED = MethodPolicy(max_attempts=3, hedging_delay=0.05)


async def test_hedge_to_the_next_endpoint_wins_and_the_slow_attempt_is_cancelled(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.delay = 1.0
    method = unary(Idempotency.NO_SIDE_EFFECTS, HEDGED)
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        started = time.monotonic()
        answer = await call(client, method)
        elapsed = time.monotonic() - started
        stats = client.stats
        # scenario: past the slow attempt's 1 s, so one that was not cancelled would have run
        await asyncio.sleep(1.2)
    assert not answer.startswith("node-a") and elapsed < 0.8
    assert stats.hedges == 1 and stats.hedge_wins == 1
    assert replicas[0].behaviour.executions == 0  # cancelled before it finished


async def test_hedging_is_only_for_methods_without_side_effects(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.delay = 0.3
    method = unary(Idempotency.IDEMPOTENT, HEDGED)
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        assert (await call(client, method)).startswith("node-a")
        assert client.stats.hedges == 0
    assert nodes(*replicas) == [1, 0, 0]


async def test_a_fatal_answer_of_any_hedge_ends_the_call(replicas: list[Replica]) -> None:
    replicas[0].behaviour.delay = 2.0
    for replica in replicas[1:]:
        replica.behaviour.app_error = True
    method = unary(Idempotency.NO_SIDE_EFFECTS, HEDGED)
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            await call(client, method)
        assert time.monotonic() - started < 1.5
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert nodes(*replicas)[0] == 1 and sum(nodes(*replicas)[1:]) == 1


async def test_non_fatal_hedge_failure_sends_the_next_hedge_at_once(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.delay = 2.0
    replicas[1].behaviour.unavailable_next = 1
    replicas[2].behaviour.unavailable_next = 1
    method = unary(Idempotency.NO_SIDE_EFFECTS, MethodPolicy(max_attempts=3, hedging_delay=0.05))
    async with AsyncClient(static_target(replicas), node="node-a", retry=FAST) as client:
        with pytest.raises(CallFailedError) as failure:
            await call(client, method, timeout=0.6)
    # All three sent; two failed UNAVAILABLE; the frozen one ran into the deadline.
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert nodes(*replicas) == [1, 1, 1]


# -- observers -----------------------------------------------------------------


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        self.events.append(("attempt", endpoint.node, attempt, hedged))

    def on_retry(self, method: str, attempt: int, code: grpc.StatusCode, delay: float) -> None:
        self.events.append(("retry", attempt, code.name))

    def on_failover(self, method: str, failed: Endpoint, next_endpoint: Endpoint) -> None:
        self.events.append(("failover", failed.node))

    def on_hedge(self, method: str, endpoint: Endpoint, attempt: int) -> None:
        self.events.append(("hedge", attempt))

    def on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        self.events.append(("ejection", endpoint.node))

    def on_endpoints_changed(self, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> None:
        self.events.append(("endpoints", len(old), len(new)))


class Broken(BaseObserver):
    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        raise RuntimeError("observer bug")


async def test_observers_see_attempts_retries_failovers_and_ejections(
    replicas: list[Replica],
) -> None:
    replicas[0].behaviour.unavailable_next = 1
    recorder = Recorder()
    observers = [recorder, LoggingObserver(), Broken()]
    async with AsyncClient(
        static_target(replicas), node="node-a", retry=FAST, observers=observers
    ) as client:
        await call(client, unary())
        stats = client.stats.as_dict()
    events = recorder.events
    assert events[0] == ("endpoints", 0, 3)
    assert ("attempt", "node-a", 1, False) in events
    assert ("ejection", "node-a") in events
    assert ("retry", 1, "UNAVAILABLE") in events
    assert ("failover", "node-a") in events
    assert [e for e in events if e[0] == "attempt"][1][2] == 2
    assert stats["calls"] == 1 and stats["attempts"] == 2
    assert stats["retries"] == stats["failovers"] == stats["ejections"] == 1
    assert stats["endpoint_changes"] == 1
