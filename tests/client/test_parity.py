"""One scenario table, run through the asyncio and the blocking client.

Both clients drive the same call state machine; this checks that what a
caller sees (the answer or the error, and ``client.stats``) is the same, and
what the scenario expects, for every row; and that observers see the same
events (call started/finished, attempts with locality tier and outcome).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime import (
    AsyncClient,
    EjectionPolicy,
    Idempotency,
    MethodInfo,
    MethodKind,
    MethodPolicy,
    RetryPolicy,
    SyncClient,
)
from protoc_gen_localfirst.runtime.client.observers import (
    AttemptFinished,
    AttemptInfo,
    BaseObserver,
    CallFinished,
    CallInfo,
)
from protoc_gen_localfirst.schema import NO_POLICY
from tests.client.conftest import static_target
from tests.client.echo import Behaviour, Replica

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01)


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable[[list[Behaviour]], None]
    idempotency: Idempotency = Idempotency.IDEMPOTENCY_UNKNOWN
    policy: MethodPolicy = NO_POLICY
    timeout: float = 5.0
    answered_by: str | None = None
    """``node-a`` (the caller's node), ``other`` (another node's replica), or None: it fails.

    Replicas of the other nodes share a locality tier, which calls rotate over."""
    code: grpc.StatusCode | None = None
    details: str = ""
    """A regular expression the error's details must match."""
    stats: dict[str, int] = field(default_factory=dict)
    finished: tuple[object, ...] | None = None
    """``(code, attempts, retries, hedges, failovers, locality)`` of ``on_call_finished``."""


class Recorder(BaseObserver):
    """What observers see, without times or addresses (which differ between runs)."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_call_started(self, call: CallInfo) -> None:
        self.events.append(("call", call.method, call.target.startswith("static:///"), call.kind))

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        self.events.append(("attempt", attempt.number, attempt.locality, attempt.hedged))

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        self.events.append(("attempt ended", event.attempt.number, event.outcome, event.code))

    def on_call_finished(self, event: CallFinished) -> None:
        self.events.append(
            (
                "finished",
                event.code,
                event.attempts,
                event.retries,
                event.hedges,
                event.failovers,
                event.locality,
            )
        )


def frozen_local(b: list[Behaviour]) -> None:
    b[0].delay = 30.0


SCENARIOS = [
    Scenario(
        "local first",
        lambda b: None,
        answered_by="node-a",
        stats={"attempts": 1},
        finished=(grpc.StatusCode.OK, 1, 0, 0, 0, "node"),
    ),
    Scenario(
        "failover on UNAVAILABLE",
        lambda b: setattr(b[0], "unavailable_next", 1),
        answered_by="other",
        stats={"attempts": 2, "retries": 1, "failovers": 1},
        finished=(grpc.StatusCode.OK, 2, 1, 0, 1, "other"),
    ),
    Scenario(
        "an answer of the service is not retried",
        lambda b: setattr(b[0], "app_error", True),
        code=grpc.StatusCode.INVALID_ARGUMENT,
        details="node-a rejects this",
        stats={"attempts": 1, "retries": 0},
        finished=(grpc.StatusCode.INVALID_ARGUMENT, 1, 0, 0, 0, "node"),
    ),
    Scenario(
        "pushback replaces the backoff",
        lambda b: (setattr(b[0], "fail_next", 1), setattr(b[0], "pushback", "20")),
        idempotency=Idempotency.IDEMPOTENT,
        policy=MethodPolicy(retryable_codes=("UNAVAILABLE", "RESOURCE_EXHAUSTED")),
        answered_by="other",
        stats={"attempts": 2, "retries": 1, "pushbacks": 1},
    ),
    Scenario(
        "every replica down names every endpoint",
        lambda b: [setattr(x, "unavailable_next", 9) for x in b],
        code=grpc.StatusCode.UNAVAILABLE,
        details=r"all 4 attempts failed; tried 127\.0\.0\.11(?=.*127\.0\.0\.12)(?=.*127\.0\.0\.13)",
        stats={"attempts": 4, "retries": 3},
    ),
    Scenario(
        "per-attempt timeout fails over from a frozen replica",
        frozen_local,
        idempotency=Idempotency.IDEMPOTENT,
        policy=MethodPolicy(
            per_attempt_timeout=0.2, retryable_codes=("UNAVAILABLE", "DEADLINE_EXCEEDED")
        ),
        answered_by="other",
        stats={"attempts": 2, "ejections": 1},
    ),
    Scenario(
        "a hedge wins over a frozen replica",
        frozen_local,
        idempotency=Idempotency.NO_SIDE_EFFECTS,
        policy=MethodPolicy(max_attempts=3, hedging_delay=0.05),
        answered_by="other",
        stats={"attempts": 2, "hedges": 1, "hedge_wins": 1},
        finished=(grpc.StatusCode.OK, 2, 1, 1, 0, "other"),
    ),
    Scenario(
        "the deadline spans all attempts",
        lambda b: [setattr(x, "delay", 30.0) for x in b],
        timeout=0.3,
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        details=r"deadline of 0\.3s exceeded after 1 attempt",
        stats={"attempts": 1},
        finished=(grpc.StatusCode.DEADLINE_EXCEEDED, 1, 0, 0, 0, "node"),
    ),
]


@dataclass
class Outcome:
    answered_by: str | None
    code: grpc.StatusCode | None
    details: str
    stats: dict[str, int]
    events: list[tuple[object, ...]] = field(default_factory=list)


def method_of(scenario: Scenario) -> MethodInfo[StringValue, StringValue]:
    return MethodInfo(
        "test.Echo",
        "Unary",
        MethodKind.UNARY_UNARY,
        StringValue,
        StringValue,
        idempotency=scenario.idempotency,
        policy=scenario.policy,
    )


def outcome(result: StringValue | grpc.RpcError, stats: dict[str, int]) -> Outcome:
    if isinstance(result, grpc.RpcError):
        return Outcome(None, result.code(), result.details() or "", stats)  # type: ignore[attr-defined]
    node = result.value.split(":")[0]
    return Outcome(node if node == "node-a" else "other", None, "", stats)


async def run_async(target: str, scenario: Scenario) -> Outcome:
    ejection = EjectionPolicy(base_time=30.0, max_time=30.0)
    recorder = Recorder()
    async with AsyncClient(
        target, node="node-a", retry=FAST, ejection=ejection, observers=[recorder]
    ) as client:
        try:
            result: StringValue | grpc.RpcError = await client._unary_unary(
                method_of(scenario),
                StringValue(value="x"),
                timeout=scenario.timeout,
                metadata=None,
                retry=None,
            )
        except grpc.RpcError as error:
            result = error
        seen = outcome(result, client.stats.as_dict())
    seen.events = recorder.events
    return seen


def run_sync(target: str, scenario: Scenario) -> Outcome:
    ejection = EjectionPolicy(base_time=30.0, max_time=30.0)
    recorder = Recorder()
    with SyncClient(
        target, node="node-a", retry=FAST, ejection=ejection, observers=[recorder]
    ) as client:
        try:
            result: StringValue | grpc.RpcError = client._unary_unary(
                method_of(scenario),
                StringValue(value="x"),
                timeout=scenario.timeout,
                metadata=None,
                retry=None,
            )
        except grpc.RpcError as error:
            result = error
        seen = outcome(result, client.stats.as_dict())
    seen.events = recorder.events
    return seen


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_both_clients_behave_alike(replicas: list[Replica], scenario: Scenario) -> None:
    target = static_target(replicas)
    results = {}
    for kind in ("async", "sync"):
        for replica in replicas:
            replica.behaviour = Behaviour()
        scenario.setup([r.behaviour for r in replicas])
        if kind == "async":
            results[kind] = await run_async(target, scenario)
        else:
            results[kind] = await asyncio.to_thread(run_sync, target, scenario)
    for kind, seen in results.items():
        assert seen.answered_by == scenario.answered_by, kind
        assert seen.code == scenario.code, kind
        assert re.search(scenario.details, seen.details), (kind, seen.details)
        for counter, expected in scenario.stats.items():
            assert seen.stats[counter] == expected, (kind, counter, seen.stats)
    assert results["async"].stats == results["sync"].stats
    assert results["async"].events == results["sync"].events
    events = results["async"].events
    assert events[0] == ("call", "test.Echo/Unary", True, "unary_unary")
    finished = [e for e in events if e[0] == "finished"]
    assert len(finished) == 1  # exactly once, whatever the outcome
    if scenario.finished is not None:
        assert finished[0][1:] == scenario.finished, finished
