"""The call state machine on its own: no sockets, no event loop, a clock we move by hand."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.actions import (
    Attempt,
    AwaitEndpoints,
    CallSettings,
    GiveUp,
    Wait,
)
from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.call import PREVIOUS_ATTEMPTS_KEY, CallState
from protoc_gen_localfirst.runtime.client.errors import (
    AttemptRecord,
    CallFailedError,
    describe_attempts,
)
from protoc_gen_localfirst.runtime.client.observers import (
    AttemptFinished,
    AttemptInfo,
    BaseObserver,
    CallFinished,
    ClientEvents,
)
from protoc_gen_localfirst.runtime.client.policy import RetryPolicy, allowed_codes, hedges
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottle, RetryThrottling
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import DRAINING_KEY as DRAINING
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodKind

LOCAL = Endpoint("10.0.0.1", 1, node="node-a")
OTHER = Endpoint("10.0.0.2", 1, node="node-b")
NODE_TRAILER = (("localfirst-node", "node-x"),)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def error(
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    details: str = "shedding load",
    trailers: tuple[tuple[str, str], ...] = NODE_TRAILER,
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=details
    )


def make_call(
    *,
    policy: RetryPolicy | None = None,
    idempotency: Idempotency = Idempotency.IDEMPOTENCY_UNKNOWN,
    timeout: float | None = 10.0,
    endpoints: tuple[Endpoint, ...] = (LOCAL, OTHER),
    throttle: RetryThrottle | None = None,
    clock: Clock | None = None,
    refresh: Callable[[], None] = lambda: None,
    unsent_patience: float = 5.0,
    observers: tuple[object, ...] = (),
) -> tuple[CallState, ClientEvents]:
    policy = policy or RetryPolicy(initial_backoff=0.1, max_backoff=1.0)
    info = MethodInfo("t.S", "M", MethodKind.UNARY_UNARY, StringValue, StringValue, idempotency)
    events = ClientEvents(observers)  # type: ignore[arg-type]
    settings = CallSettings(
        info=info,
        policy=policy,
        retryable_codes=allowed_codes(info, policy),
        hedging=hedges(info, policy),
        balancer=Balancer(endpoints, node="node-a", zone=None),
        events=events,
        throttle=throttle,
        no_endpoints_reason=lambda: "t has no ready endpoints",
        refresh=refresh,
        unsent_patience=unsent_patience,
        target="static:///t",
    )
    return CallState(settings, timeout=timeout, clock=clock or Clock()), events


def attempt(call: CallState) -> Attempt:
    action = call.next_action()
    assert isinstance(action, Attempt), action
    return action


def attempt_after_waits(call: CallState, clock: Clock) -> Attempt:
    """The next attempt, the clock moved past any backoff (or wait for endpoints) before it."""
    action = call.next_action()
    while isinstance(action, Wait | AwaitEndpoints):
        clock.now += action.seconds or 0.0
        action = call.next_action()
    assert isinstance(action, Attempt), action
    return action


def test_the_first_attempt_goes_to_the_local_replica_with_the_whole_deadline() -> None:
    call, events = make_call(timeout=2.0)
    first = attempt(call)
    assert (first.number, first.endpoint, first.timeout, first.hedged) == (1, LOCAL, 2.0, False)
    assert first.metadata is None
    call.attempt_succeeded(first)
    assert events.stats.as_dict()["attempts"] == 1 and events.stats.calls == 1


def test_a_retry_backs_off_with_full_jitter_then_fails_over_with_attempt_metadata() -> None:
    clock = Clock()
    call, events = make_call(clock=clock)
    call.attempt_failed(attempt(call), error())
    wait = call.next_action()
    assert isinstance(wait, Wait) and wait.seconds is not None
    assert 0.0 <= wait.seconds <= 0.1  # uniform(0, initial_backoff) before the first retry
    clock.now += wait.seconds
    second = attempt(call)
    assert second.endpoint == OTHER and second.number == 2
    assert second.timeout == pytest.approx(10.0 - wait.seconds)
    assert second.metadata == ((PREVIOUS_ATTEMPTS_KEY, "1"),)
    assert (events.stats.retries, events.stats.failovers) == (1, 1)


def test_pushback_sets_the_wait_exactly() -> None:
    call, events = make_call()
    pushed = error(trailers=(*NODE_TRAILER, ("grpc-retry-pushback-ms", "250")))
    call.attempt_failed(attempt(call), pushed)
    assert call.next_action() == Wait(0.25)
    assert events.stats.pushbacks == 1


def test_running_out_of_attempts_names_every_endpoint() -> None:
    call, _ = make_call(policy=RetryPolicy(max_attempts=2, initial_backoff=0.0))
    call.attempt_failed(attempt(call), error())
    call.attempt_failed(attempt(call), error())
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, CallFailedError)
    assert verdict.error.code() == grpc.StatusCode.UNAVAILABLE
    details = verdict.error.details() or ""
    assert "all 2 attempts failed; tried 10.0.0.1:1 (node-a)" in details
    assert "10.0.0.2:1 (node-b)" in details


def test_the_same_answer_from_the_same_endpoint_is_named_once_with_its_count() -> None:
    a, b = Endpoint("10.0.0.1", 1, node="node-a"), Endpoint("10.0.0.2", 1, node="node-b")
    refused = (grpc.StatusCode.UNAVAILABLE, "Hostname Verification Check failed")
    records = [
        AttemptRecord(a, *refused),
        AttemptRecord(a, *refused),
        AttemptRecord(a, grpc.StatusCode.UNAVAILABLE, "Socket closed"),
        AttemptRecord(b, *refused),
        AttemptRecord(a, *refused),
    ]
    assert describe_attempts(records) == (
        "10.0.0.1:1 (node-a), 2 attempts: UNAVAILABLE 'Hostname Verification Check failed'; "
        "10.0.0.1:1 (node-a): UNAVAILABLE 'Socket closed'; "
        "10.0.0.2:1 (node-b): UNAVAILABLE 'Hostname Verification Check failed'; "
        "10.0.0.1:1 (node-a): UNAVAILABLE 'Hostname Verification Check failed'"
    )


def test_no_wait_past_the_deadline() -> None:
    call, events = make_call(timeout=1.0)
    pushed = error(trailers=(*NODE_TRAILER, ("grpc-retry-pushback-ms", "2000")))
    call.attempt_failed(attempt(call), pushed)
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp) and verdict.cause is pushed
    assert "gave up after 1 attempt: backoff would pass the deadline" in (
        verdict.error.details() or ""  # type: ignore[attr-defined]
    )
    assert events.stats.retries == 0


def test_the_service_answer_is_raised_unchanged() -> None:
    call, _ = make_call(idempotency=Idempotency.IDEMPOTENT)
    answer = error(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    call.attempt_failed(attempt(call), answer)
    assert call.next_action() == GiveUp(answer)


def test_a_reset_after_sending_is_retried_only_when_replay_is_safe() -> None:
    reset = error(details="Socket closed", trailers=())
    unknown, _ = make_call()
    unknown.attempt_failed(attempt(unknown), reset)
    assert unknown.next_action() == GiveUp(reset)
    safe, _ = make_call(idempotency=Idempotency.IDEMPOTENT)
    safe.attempt_failed(attempt(safe), reset)
    assert not isinstance(safe.next_action(), GiveUp)


def test_a_committed_call_is_not_retried() -> None:
    call, _ = make_call(idempotency=Idempotency.IDEMPOTENT)
    first = attempt(call)
    call.committed = True
    failure = error()
    call.attempt_failed(first, failure)
    assert call.next_action() == GiveUp(failure)


def test_lost_requests_commit_the_call() -> None:
    call, _ = make_call(idempotency=Idempotency.IDEMPOTENT)
    failure = error()
    call.attempt_failed(attempt(call), failure, replayable=False)
    assert call.committed and call.next_action() == GiveUp(failure)


def test_throttling_stops_retries() -> None:
    throttle = RetryThrottle(RetryThrottling(max_tokens=2, token_ratio=0.1))
    call, events = make_call(throttle=throttle)
    call.attempt_failed(attempt(call), error())
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp)
    assert "retries throttled" in (verdict.error.details() or "")  # type: ignore[attr-defined]
    assert events.stats.throttled == 1


def test_no_endpoints_fails_at_once_with_the_reason() -> None:
    call, _ = make_call(endpoints=())
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, CallFailedError)
    assert "t has no ready endpoints; no endpoint was tried" in (verdict.error.details() or "")


HEDGED = RetryPolicy(max_attempts=3, hedging_delay=0.05)


def test_hedging_sends_the_next_attempt_after_the_delay() -> None:
    clock = Clock()
    call, events = make_call(policy=HEDGED, idempotency=Idempotency.NO_SIDE_EFFECTS, clock=clock)
    first = attempt(call)
    assert call.next_action() == Wait(pytest.approx(0.05))  # type: ignore[arg-type]
    clock.now += 0.05
    second = attempt(call)
    assert second.hedged and second.endpoint == OTHER
    call.attempt_succeeded(second)
    assert first.number == 1 and events.stats.hedges == 1 and events.stats.hedge_wins == 1


def test_a_retryable_hedge_failure_sends_the_next_at_once() -> None:
    clock = Clock()
    call, _ = make_call(policy=HEDGED, idempotency=Idempotency.NO_SIDE_EFFECTS, clock=clock)
    first = attempt(call)
    call.attempt_failed(first, error())
    assert attempt(call).number == 2  # no wait


def test_a_fatal_hedge_answer_ends_the_call() -> None:
    clock = Clock()
    call, _ = make_call(policy=HEDGED, idempotency=Idempotency.NO_SIDE_EFFECTS, clock=clock)
    attempt(call)
    clock.now += 0.05
    second = attempt(call)
    fatal = error(grpc.StatusCode.INVALID_ARGUMENT, "no")
    call.attempt_failed(second, fatal)
    assert call.next_action() == GiveUp(fatal)


def test_hedges_stop_at_max_attempts_and_then_wait_for_those_in_flight() -> None:
    clock = Clock()
    call, _ = make_call(policy=HEDGED, idempotency=Idempotency.NO_SIDE_EFFECTS, clock=clock)
    for _ in range(3):
        attempt(call)
        clock.now += 0.05
    assert call.next_action() == Wait(None)


# -- transparent retries (gRFC A6: the request never left the client) ----------------

REFUSED = "failed to connect to all addresses; last error: UNAVAILABLE: Connection refused"


def test_an_unsent_attempt_is_retried_for_any_method_and_not_counted() -> None:
    clock = Clock()
    policy = RetryPolicy(max_attempts=1, initial_backoff=0.01, max_backoff=0.01)
    call, events = make_call(policy=policy, clock=clock)  # unknown idempotency, no retries
    call.attempt_failed(attempt(call), error(details=REFUSED, trailers=()))
    wait = call.next_action()
    assert isinstance(wait, Wait)  # backoff, then the next endpoint
    clock.now += wait.seconds or 0.0
    second = attempt(call)
    assert second.endpoint == OTHER
    call.attempt_succeeded(second)
    assert events.stats.attempts == 2


def test_unsent_attempts_spend_no_retry_budget() -> None:
    throttle = RetryThrottle(RetryThrottling(max_tokens=2, token_ratio=0.1))
    call, _ = make_call(throttle=throttle)
    call.attempt_failed(attempt(call), error(details=REFUSED, trailers=()))
    assert throttle.tokens == 2 and not isinstance(call.next_action(), GiveUp)


def test_when_every_endpoint_refuses_the_call_waits_for_new_endpoints() -> None:
    clock = Clock()
    refreshes: list[int] = []
    call, _ = make_call(clock=clock, timeout=2.0, refresh=lambda: refreshes.append(1))
    for _ in range(2):  # LOCAL, then OTHER: every known endpoint
        first = attempt(call)
        call.attempt_failed(first, error(details=REFUSED, trailers=()))
        action = call.next_action()
        if isinstance(action, Wait):
            clock.now += action.seconds or 0.0
            continue
    assert isinstance(action, AwaitEndpoints)
    assert refreshes == [1]  # re-resolve at once, past the source's rate limit
    assert 0 < action.seconds <= 2.0 and action.version == call.settings.balancer.version
    fresh = Endpoint("10.0.0.9", 1, node="node-a")
    call.settings.balancer.update([fresh])  # discovery answered with a new address
    assert attempt(call).endpoint == fresh


def test_unsent_attempts_stop_at_the_deadline_naming_every_endpoint() -> None:
    clock = Clock()
    call, _ = make_call(clock=clock, timeout=0.5)
    call.attempt_failed(attempt(call), error(details=REFUSED, trailers=()))
    second = attempt_after_waits(call, clock)
    clock.now += 0.6
    call.attempt_failed(second, error(details=REFUSED, trailers=()))
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp) and verdict.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    details = verdict.error.details() or ""  # type: ignore[attr-defined]
    assert "10.0.0.1:1" in details and "10.0.0.2:1" in details


def test_without_a_deadline_unsent_attempts_give_up_after_the_patience() -> None:
    clock = Clock()
    call, _ = make_call(clock=clock, timeout=None, unsent_patience=1.0)
    call.attempt_failed(attempt(call), error(details=REFUSED, trailers=()))
    second = attempt_after_waits(call, clock)
    clock.now += 1.5
    call.attempt_failed(second, error(details=REFUSED, trailers=()))
    verdict = call.next_action()
    assert isinstance(verdict, GiveUp)
    assert "no endpoint could be reached after 2 attempts" in (verdict.error.details() or "")  # type: ignore[attr-defined]


def test_hedged_calls_retry_unsent_attempts_transparently_too() -> None:
    clock = Clock()
    refreshes: list[int] = []
    quick = RetryPolicy(max_attempts=3, hedging_delay=0.05, initial_backoff=0.01, max_backoff=0.05)
    call, _ = make_call(
        policy=quick,
        idempotency=Idempotency.NO_SIDE_EFFECTS,
        clock=clock,
        timeout=2.0,
        refresh=lambda: refreshes.append(1),
    )
    for _ in range(2):  # LOCAL, then OTHER refuse the connection
        call.attempt_failed(attempt_after_waits(call, clock), error(details=REFUSED, trailers=()))
    action = call.next_action()
    assert isinstance(action, AwaitEndpoints) and refreshes == [1]
    call.settings.balancer.update([Endpoint("10.0.0.9", 1, node="node-a")])
    for _ in range(quick.max_attempts):  # none of the refused attempts counted
        call.attempt_failed(attempt_after_waits(call, clock), error(details=REFUSED, trailers=()))
        assert clock.now < 102.0  # (the clock starts at 100: within the 2 s deadline)
    assert not isinstance(call.next_action(), GiveUp)  # still trying, within the deadline


def test_when_every_endpoint_is_stopping_the_call_waits_for_new_endpoints() -> None:
    clock = Clock()
    draining = error(
        details="server is shutting down", trailers=(*NODE_TRAILER, (DRAINING, "true"))
    )
    call, _ = make_call(clock=clock, timeout=2.0, policy=RetryPolicy(max_attempts=2))
    for _ in range(2):  # both endpoints refuse: they are stopping (a rolling update)
        call.attempt_failed(attempt_after_waits(call, clock), draining)
    assert isinstance(call.next_action(), AwaitEndpoints)  # not "all 2 attempts failed"


# -- events for observers ----------------------------------------------------------------


class Tracing(BaseObserver):
    """Adds a header to every attempt and keeps what it saw."""

    def __init__(self) -> None:
        self.attempts: list[AttemptInfo] = []
        self.ended: list[AttemptFinished] = []
        self.finished: list[CallFinished] = []

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        self.attempts.append(attempt)
        attempt.add_metadata("traceparent", f"attempt-{attempt.number}")

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        self.ended.append(event)

    def on_call_finished(self, event: CallFinished) -> None:
        self.finished.append(event)


def test_observers_add_metadata_to_each_attempt_and_see_tier_outcome_and_the_end() -> None:
    clock = Clock()
    observer = Tracing()
    call, _ = make_call(clock=clock, idempotency=Idempotency.IDEMPOTENT, observers=(observer,))
    first = attempt(call)
    assert first.metadata == (("traceparent", "attempt-1"),)
    clock.now += 0.5
    call.attempt_failed(first, error())
    second = attempt_after_waits(call, clock)
    assert second.metadata is not None
    assert ("traceparent", "attempt-2") in second.metadata
    assert (PREVIOUS_ATTEMPTS_KEY, "1") in second.metadata
    call.attempt_succeeded(second, NODE_TRAILER)
    assert [a.locality for a in observer.attempts] == ["node", "other"]
    assert [(e.outcome, e.code) for e in observer.ended] == [
        ("error", grpc.StatusCode.UNAVAILABLE),
        ("ok", grpc.StatusCode.OK),
    ]
    assert observer.ended[0].latency == 0.5
    assert observer.ended[1].node == "node-x"  # what the server announced
    (finished,) = observer.finished
    assert finished.method == "t.S/M"
    assert finished.target == "static:///t"
    assert finished.code == grpc.StatusCode.OK
    assert (finished.attempts, finished.retries, finished.failovers) == (2, 1, 1)
    assert finished.endpoint == OTHER and finished.locality == "other"
    assert finished.retry_delay == pytest.approx(second.started_at - (first.started_at + 0.5))
    call.close()  # a driver's finally: nothing more
    assert len(observer.finished) == 1


def test_a_call_given_up_by_its_driver_ends_cancelled_once() -> None:
    observer = Tracing()
    call, _ = make_call(observers=(observer,))
    first = attempt(call)
    call.attempt_cancelled(first)
    call.close()
    call.close()
    assert [e.outcome for e in observer.ended] == ["cancelled"]
    assert [f.code for f in observer.finished] == [grpc.StatusCode.CANCELLED]


def test_transparent_retries_are_not_retries() -> None:
    clock = Clock()
    observer = Tracing()
    call, _ = make_call(clock=clock, observers=(observer,))
    call.attempt_failed(attempt(call), error(details=REFUSED, trailers=()))
    call.attempt_succeeded(attempt_after_waits(call, clock))
    assert observer.ended[0].outcome == "unsent"
    (finished,) = observer.finished
    assert (finished.attempts, finished.retries, finished.transparent_retries) == (2, 0, 1)


def test_an_error_given_up_on_ends_the_call_with_its_code() -> None:
    observer = Tracing()
    call, _ = make_call(observers=(observer,))
    call.attempt_failed(attempt(call), error(grpc.StatusCode.INVALID_ARGUMENT, "no"))
    assert isinstance(call.next_action(), GiveUp)
    assert [f.code for f in observer.finished] == [grpc.StatusCode.INVALID_ARGUMENT]


def test_without_observers_no_records_are_built() -> None:
    call, _ = make_call()
    first = attempt(call)
    assert first.info is None and first.metadata is None


def test_a_hedging_policy_that_cannot_apply_is_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from protoc_gen_localfirst.runtime.client import policy as policy_module

    policy = RetryPolicy(max_attempts=3, hedging_delay=0.05)
    streaming = MethodInfo(
        "t.S",
        "Watch",
        MethodKind.UNARY_STREAM,
        StringValue,
        StringValue,
        Idempotency.NO_SIDE_EFFECTS,
    )
    unsafe = MethodInfo("t.S", "Put", MethodKind.UNARY_UNARY, StringValue, StringValue)
    safe = MethodInfo(
        "t.S", "Get", MethodKind.UNARY_UNARY, StringValue, StringValue, Idempotency.NO_SIDE_EFFECTS
    )
    policy_module._warned_hedging.clear()
    with caplog.at_level("WARNING", logger="protoc_gen_localfirst.retry"):
        assert not hedges(streaming, policy)
        assert not hedges(streaming, policy)  # once per method
        assert not hedges(unsafe, policy)
        assert hedges(safe, policy)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "/t.S/Watch: the hedging policy" in messages[0]
    assert "unary-stream rpc" in messages[0]
    assert "/t.S/Put" in messages[1] and "NO_SIDE_EFFECTS" in messages[1]
