"""Load-aware locality on its own (sans-IO): reports, the latency rule, two choices.

``Balancer.plan()`` with an injected clock and ``chance``: no sockets, no event
loop. Attempts are simulated with ``attempt_started`` / ``attempt_ended``.
"""

from __future__ import annotations

import math

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.actions import Attempt, CallSettings
from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.call import CallState
from protoc_gen_localfirst.runtime.client.load import (
    SPILL_FULL,
    SPILL_SLOW,
    STRICT_LOCALITY,
    EndpointLoad,
    LocalityPolicy,
)
from protoc_gen_localfirst.runtime.client.observers import ClientEvents
from protoc_gen_localfirst.runtime.client.policy import RetryPolicy, allowed_codes, hedges
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY, OVERLOADED_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY, LoadReport, encode
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodKind

LOCAL = Endpoint("10.0.0.1", 1, node="node-a")
LOCAL2 = Endpoint("10.0.0.2", 1, node="node-a")
LOCAL3 = Endpoint("10.0.0.3", 1, node="node-a")
NEXT = Endpoint("10.0.0.4", 1, node="node-b")
NEXT2 = Endpoint("10.0.0.5", 1, node="node-c")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Chance:
    """``random.random`` replaced by a value the test sets."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value
        self.draws = 0

    def __call__(self) -> float:
        self.draws += 1
        return self.value


def make_balancer(
    endpoints: tuple[Endpoint, ...] = (LOCAL, NEXT),
    *,
    policy: LocalityPolicy | None = None,
    clock: FakeClock | None = None,
    chance: Chance | None = None,
) -> Balancer:
    return Balancer(
        endpoints,
        node="node-a",
        zone=None,
        locality=policy,
        clock=clock or FakeClock(),
        chance=chance or Chance(),
    )


def report(in_flight: int, limit: int | None) -> LoadReport:
    return LoadReport(in_flight=in_flight, limit=limit)


def answered(
    balancer: Balancer,
    endpoint: Endpoint,
    *,
    latency: float | None = None,
    load: LoadReport | None = None,
) -> None:
    """One attempt to ``endpoint`` started and answered (with its latency and report)."""
    balancer.attempt_started(endpoint, 0.0)
    balancer.attempt_ended(endpoint, latency, load)


# --- the servers' reports decide ---------------------------------------------------


def test_the_local_tier_keeps_every_call_while_reports_show_room() -> None:
    chance = Chance(0.99)  # would spill by the latency rule, were it asked
    balancer = make_balancer(chance=chance)
    # Another client has 1 call running there (the reporting call is not counted).
    answered(balancer, LOCAL, load=report(in_flight=2, limit=4))
    for _ in range(3):  # 1 of theirs + up to 2 of ours + this one: at most 4 of 4
        assert balancer.plan() == ([LOCAL, NEXT], None)
        balancer.attempt_started(LOCAL, 0.0)
    assert chance.draws == 0  # the reports decided, not the latency rule
    load = balancer.load_of(LOCAL)
    assert load is not None and load.outstanding == 3


def test_a_full_local_replica_spills_and_comes_back_when_a_report_shows_room() -> None:
    balancer = make_balancer()
    answered(balancer, LOCAL, load=report(in_flight=2, limit=4))  # 1 call of another client
    for _ in range(3):
        balancer.attempt_started(LOCAL, 0.0)
    # 1 theirs + 3 ours = the limit: one more would be 5 of 4.
    assert balancer.plan() == ([NEXT, LOCAL], SPILL_FULL)
    assert balancer.plan() == ([NEXT, LOCAL], SPILL_FULL)  # still full: nothing ended
    # One of ours ends; its report says the other client's call ended too.
    balancer.attempt_ended(LOCAL, None, report(in_flight=3, limit=4))
    assert balancer.plan() == ([LOCAL, NEXT], None)


def test_every_local_replica_must_be_full_for_a_full_spill() -> None:
    balancer = make_balancer((LOCAL, LOCAL2, NEXT))
    answered(balancer, LOCAL, load=report(in_flight=2, limit=2))  # 1 of another client
    answered(balancer, LOCAL2, load=report(in_flight=1, limit=2))  # idle
    balancer.attempt_started(LOCAL, 0.0)  # LOCAL: 1 theirs + 1 ours = full
    for _ in range(2):  # both rotations: the one with room goes first, no spill
        order, spill = balancer.plan()
        assert spill is None and order == [LOCAL2, LOCAL, NEXT]
    balancer.attempt_started(LOCAL2, 0.0)
    balancer.attempt_started(LOCAL2, 0.0)  # LOCAL2 full too
    order, spill = balancer.plan()
    assert spill == SPILL_FULL and order[0] == NEXT and set(order[1:]) == {LOCAL, LOCAL2}


def test_reports_older_than_the_ttl_are_ignored() -> None:
    clock = FakeClock()
    policy = LocalityPolicy(report_ttl=2.0)
    balancer = make_balancer(policy=policy, clock=clock, chance=Chance(0.5))
    answered(balancer, LOCAL, load=report(in_flight=5, limit=4))  # 4 of others: full
    assert balancer.plan() == ([NEXT, LOCAL], SPILL_FULL)
    clock.now += 2.0  # exactly the ttl: still trusted
    assert balancer.plan() == ([NEXT, LOCAL], SPILL_FULL)
    clock.now += 0.01
    # Stale: no limit known, so the latency rule decides (local keeps all: share 1.0).
    assert balancer.plan() == ([LOCAL, NEXT], None)
    load = balancer.load_of(LOCAL)
    assert load is not None and load.utilization(clock(), policy.report_ttl) is None


def test_strict_locality_never_spills() -> None:
    assert STRICT_LOCALITY == LocalityPolicy(spill=False)
    clock = FakeClock()
    chance = Chance(0.99)
    balancer = make_balancer(policy=STRICT_LOCALITY, clock=clock, chance=chance)
    answered(balancer, LOCAL, load=report(in_flight=9, limit=1))  # far over its limit
    answered(balancer, NEXT, latency=0.001)
    for _ in range(20):  # and far slower than the next tier
        clock.now += 1.0
        answered(balancer, LOCAL, latency=1.0)
    for _ in range(10):
        balancer.attempt_started(LOCAL, 0.0)
        assert balancer.plan() == ([LOCAL, NEXT], None)
    assert chance.draws == 0


def test_no_spill_without_a_next_tier() -> None:
    balancer = make_balancer((LOCAL, LOCAL2))
    answered(balancer, LOCAL, load=report(in_flight=5, limit=1))
    answered(balancer, LOCAL2, load=report(in_flight=5, limit=1))
    order, spill = balancer.plan()
    assert spill is None and set(order) == {LOCAL, LOCAL2}


# --- the latency rule (servers without a limit) --------------------------------------


def test_a_slow_local_tier_keeps_a_shrinking_share_once_per_local_round_trip() -> None:
    clock = FakeClock()
    policy = LocalityPolicy()
    balancer = make_balancer(policy=policy, clock=clock)
    answered(balancer, NEXT, latency=0.010)
    assert balancer.local_share == 1.0
    # 50 ms locally vs 10 ms next door: beyond 1.25 x 10 ms + 1 ms.
    answered(balancer, LOCAL, latency=0.050)
    assert balancer.local_share == pytest.approx(policy.share_decrease)
    for _ in range(4):  # more answers of the same busy spell: one signal, not four
        clock.now += 0.01
        answered(balancer, LOCAL, latency=0.050)
    assert balancer.local_share == pytest.approx(policy.share_decrease)
    clock.now += 0.011  # just over one local round trip (50 ms) after the change
    answered(balancer, LOCAL, latency=0.050)
    assert balancer.local_share == pytest.approx(policy.share_decrease**2)
    for _ in range(100):
        clock.now += 0.06
        answered(balancer, LOCAL, latency=0.050)
    assert balancer.local_share == pytest.approx(policy.min_local_share)  # never below


def test_a_fast_local_tier_grows_its_share_back() -> None:
    clock = FakeClock()
    policy = LocalityPolicy(min_local_share=0.5)
    balancer = make_balancer(policy=policy, clock=clock)
    answered(balancer, NEXT, latency=0.010)
    for _ in range(10):
        clock.now += 0.06
        answered(balancer, LOCAL, latency=0.050)
    assert balancer.local_share == pytest.approx(0.5)
    clock.now += 60  # long after: a fast answer replaces the slow EWMA
    answered(balancer, LOCAL, latency=0.011)  # within 1.25 x 10 ms + 1 ms
    assert balancer.local_share == pytest.approx(0.5 + policy.share_increase)
    answered(balancer, LOCAL, latency=0.011)  # same instant: not another round trip
    assert balancer.local_share == pytest.approx(0.5 + policy.share_increase)
    for _ in range(100):
        clock.now += 0.02
        answered(balancer, LOCAL, latency=0.011)
    assert balancer.local_share == 1.0  # additive increase, capped at everything


def test_without_next_tier_latency_the_best_local_latency_is_the_reference() -> None:
    clock = FakeClock()
    policy = LocalityPolicy()
    balancer = make_balancer(policy=policy, clock=clock)
    answered(balancer, LOCAL, latency=0.010)  # the no-load round trip
    assert balancer.local_share == 1.0
    clock.now += 1.0
    answered(balancer, LOCAL, latency=0.100)
    assert balancer.local_share == pytest.approx(policy.share_decrease)


def test_the_local_tier_latency_is_its_answers_average() -> None:
    """Not its fastest replica's: calls that go to a slow local replica are slow calls."""
    clock = FakeClock()
    policy = LocalityPolicy()
    balancer = make_balancer((LOCAL, LOCAL2, NEXT), policy=policy, clock=clock)
    answered(balancer, NEXT, latency=0.010)
    answered(balancer, LOCAL, latency=0.010)  # as fast as next door
    assert balancer.local_share == 1.0
    for _ in range(20):  # one local replica stays fast, the other answers in 200 ms
        clock.now += 0.01
        answered(balancer, LOCAL, latency=0.010)
        clock.now += 0.01
        answered(balancer, LOCAL2, latency=0.200)
    assert balancer.local_share < policy.share_decrease


def test_the_share_decides_spills_by_chance() -> None:
    clock = FakeClock()
    chance = Chance()
    balancer = make_balancer(clock=clock, chance=chance)
    answered(balancer, NEXT, latency=0.010)
    for _ in range(2):
        clock.now += 0.1
        answered(balancer, LOCAL, latency=0.050)
    share = balancer.local_share
    assert share == pytest.approx(0.64)
    chance.value = share - 0.01
    assert balancer.plan() == ([LOCAL, NEXT], None)
    chance.value = share
    assert balancer.plan() == ([NEXT, LOCAL], SPILL_SLOW)


# --- power of two choices -------------------------------------------------------------


def test_two_choices_put_the_less_loaded_first_within_a_tier() -> None:
    balancer = make_balancer((LOCAL, LOCAL2, LOCAL3, NEXT, NEXT2))
    for endpoint in (LOCAL, LOCAL2, LOCAL3, NEXT, NEXT2):
        answered(balancer, endpoint, latency=0.010)
    for _ in range(3):
        balancer.attempt_started(LOCAL3, 0.0)  # busiest
    balancer.attempt_started(LOCAL2, 0.0)
    balancer.attempt_started(NEXT, 0.0)
    firsts = []
    for _ in range(6):  # every rotation, twice
        order, spill = balancer.plan()
        assert spill is None
        assert set(order[:3]) == {LOCAL, LOCAL2, LOCAL3}  # never across tiers
        assert order[3] == NEXT2  # the idle one of the next tier, in every rotation
        firsts.append(order[0])
    # Of the (rotated) first two the less loaded leads: LOCAL3 never does,
    # LOCAL2 only where LOCAL is not among the first two.
    assert LOCAL3 not in firsts
    assert firsts.count(LOCAL) == 4 and firsts.count(LOCAL2) == 2


def test_two_choices_prefer_reported_utilization() -> None:
    balancer = make_balancer((LOCAL, LOCAL2, NEXT))
    answered(balancer, LOCAL, load=report(in_flight=8, limit=10))
    answered(balancer, LOCAL2, load=report(in_flight=2, limit=10))
    for _ in range(4):
        assert balancer.plan() == ([LOCAL2, LOCAL, NEXT], None)


# --- EndpointLoad ---------------------------------------------------------------------


def test_endpoint_latency_is_a_peak_ewma() -> None:
    # Through the balancer, with the default policy: its peak EWMA has a 0.5 s half-life.
    clock = FakeClock()
    balancer = make_balancer(clock=clock)

    def sample(latency: float, after: float) -> float | None:
        clock.now += after
        answered(balancer, NEXT, latency=latency)
        load = balancer.load_of(NEXT)
        assert load is not None
        return load.latency

    assert sample(0.1, after=0.0) == pytest.approx(0.1)
    assert sample(0.3, after=0.05) == pytest.approx(0.3)  # slower: counts at once
    assert sample(0.1, after=0.5) == pytest.approx(0.2)  # faster, one half-life later: half way
    # Two half-lives later a quarter of the old value remains.
    assert sample(0.1, after=1.0) == pytest.approx(0.2 * 0.25 + 0.1 * 0.75)
    assert sample(0.0, after=0.0) == pytest.approx(0.125)  # no time passed: no weight yet


def test_endpoint_utilization_counts_other_clients_and_our_calls() -> None:
    load = EndpointLoad()
    load.outstanding = 1
    load.reported(report(in_flight=5, limit=10), now=0.0)  # 5 = this call + ours + 3 others
    assert load.others == 3
    assert load.utilization(now=0.0, ttl=1.0) == pytest.approx((3 + 1 + 1) / 10)
    assert load.cost(now=0.0, ttl=1.0) == pytest.approx(0.5)
    assert load.utilization(now=1.5, ttl=1.0) is None
    assert load.cost(now=1.5, ttl=1.0) == 0.0  # no report, no latency yet: unknown = idle


# --- LocalityPolicy validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("report_ttl", 0.0),
        ("report_ttl", -1.0),
        ("report_ttl", math.inf),
        ("report_ttl", math.nan),
        ("latency_half_life", 0.0),
        ("latency_half_life", math.nan),
        ("latency_tolerance", 0.5),
        ("latency_tolerance", math.nan),
        ("latency_slack", -0.001),
        pytest.param("min_local_share", 0.0),
        pytest.param("min_local_share", 1.5),
        pytest.param("share_decrease", 1.0),
        pytest.param("share_decrease", 0.0),
        pytest.param(
            "share_increase",
            -0.1,
        ),
        pytest.param(
            "share_increase",
            math.nan,
        ),
    ],
)
def test_invalid_locality_policy_values_raise_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LocalityPolicy(**{field: value})  # type: ignore[arg-type]


def test_valid_edge_values_are_accepted() -> None:
    LocalityPolicy(latency_tolerance=1.0, latency_slack=0.0, min_local_share=1.0)
    LocalityPolicy(share_decrease=0.01, report_ttl=1e-3, latency_half_life=1e-3)


# --- refusals (admission control) in the call state machine -----------------------------

_INFO = MethodInfo(
    "t.S", "M", MethodKind.UNARY_UNARY, StringValue, StringValue, Idempotency.IDEMPOTENCY_UNKNOWN
)


def _call(balancer: Balancer, events: ClientEvents) -> CallState:
    policy = RetryPolicy()
    settings = CallSettings(
        info=_INFO,
        policy=policy,
        retryable_codes=allowed_codes(_INFO, policy),
        hedging=hedges(_INFO, policy),
        balancer=balancer,
        events=events,
        throttle=None,
        no_endpoints_reason=lambda: "none",
    )
    return CallState(settings, timeout=10.0)


def _refusal(in_flight: int, limit: int) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata(
        (OVERLOADED_KEY, "true"),
        (LOAD_REPORT_KEY, encode(report(in_flight, limit))),
        (NODE_METADATA_KEY, "node-a"),
    )
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), trailers, details="overloaded"
    )


def test_a_refused_call_goes_to_the_next_tier_at_once_and_counts_a_spill() -> None:
    events = ClientEvents()
    call = _call(make_balancer(), events)
    first = call.next_action()
    assert isinstance(first, Attempt) and first.endpoint == LOCAL
    call.attempt_failed(first, _refusal(1, 1))
    second = call.next_action()  # no Wait: no backoff
    assert isinstance(second, Attempt) and second.endpoint == NEXT
    assert events.stats.spills_refused == 1 and events.stats.spills == 1


def test_a_refusal_does_not_eject_the_refusing_replica() -> None:
    balancer = make_balancer()
    call = _call(balancer, ClientEvents())
    first = call.next_action()
    assert isinstance(first, Attempt)
    call.attempt_failed(first, _refusal(1, 1))
    assert not balancer.is_ejected(LOCAL)


def test_a_refusals_report_shows_the_replica_full() -> None:
    clock = FakeClock()
    balancer = make_balancer(clock=clock)
    call = _call(balancer, ClientEvents())
    first = call.next_action()
    assert isinstance(first, Attempt)
    call.attempt_failed(first, _refusal(1, 1))  # 1 call of another client: full
    load = balancer.load_of(LOCAL)
    assert load is not None
    utilization = load.utilization(clock(), balancer.locality.report_ttl)
    assert utilization is not None and utilization > 1.0
