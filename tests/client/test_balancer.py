from protoc_gen_localfirst.runtime.client.balancer import Balancer, EjectionPolicy
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

A1 = Endpoint("10.0.0.1", 1, node="a", zone="z1")
A2 = Endpoint("10.0.0.2", 1, node="a", zone="z1")
B = Endpoint("10.0.0.3", 1, node="b", zone="z1")
C = Endpoint("10.0.0.4", 1, node="c", zone="z2")
D = Endpoint("10.0.0.5", 1, node="d", zone="z2")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_same_node_then_same_zone_then_rest() -> None:
    balancer = Balancer([C, B, A1], node="a", zone="z1")
    assert balancer.order() == [A1, B, C]


def test_load_spreads_within_a_tier_but_never_across() -> None:
    balancer = Balancer([A1, A2, C, D], node="a", zone="z1")
    firsts = [balancer.order()[0] for _ in range(10)]
    assert set(firsts) == {A1, A2}
    assert firsts.count(A1) == firsts.count(A2) == 5
    seconds = {tuple(balancer.order()[2:]) for _ in range(4)}
    assert seconds == {(C, D), (D, C)}


def test_without_own_node_every_endpoint_is_one_tier() -> None:
    balancer = Balancer([A1, B, C], node=None, zone=None)
    assert {balancer.order()[0] for _ in range(3)} == {A1, B, C}


def test_not_ready_endpoints_are_left_out() -> None:
    unready = Endpoint("10.0.0.9", 1, node="a", ready=False)
    assert Balancer([unready, B], node="a", zone=None).order() == [B]


def test_connection_failure_ejects_for_a_growing_time_then_returns() -> None:
    clock = FakeClock()
    balancer = Balancer(
        [A1, B], node="a", zone=None, ejection=EjectionPolicy(base_time=1, max_time=3), clock=clock
    )
    balancer.record_connection_failure(A1)
    assert balancer.order() == [B, A1]  # ejected goes last, but is still there
    clock.now += 1.01
    assert balancer.order() == [A1, B]
    balancer.record_connection_failure(A1)  # second failure in a row: 2 s
    clock.now += 1.5
    assert balancer.order()[0] == B
    clock.now += 0.6
    assert balancer.order()[0] == A1
    balancer.record_connection_failure(A1)
    balancer.record_connection_failure(A1)  # would be 8 s, capped at 3 s
    clock.now += 3.01
    assert balancer.order()[0] == A1
    balancer.record_success(A1)
    balancer.record_connection_failure(A1)  # after a success the count restarts: 1 s
    clock.now += 1.01
    assert balancer.order()[0] == A1


def test_update_keeps_health_of_remaining_endpoints() -> None:
    clock = FakeClock()
    balancer = Balancer([A1, B], node="a", zone=None, clock=clock)
    balancer.record_connection_failure(A1)
    balancer.update([A1, B, C])
    assert balancer.order()[-1] == A1
    balancer.update([B])
    balancer.update([A1, B])
    assert balancer.order()[0] == A1


def test_a_stopping_server_is_ejected_for_the_longest_time_and_late_answers_keep_it_so() -> None:
    """A draining server refuses calls for a while, then grpc stops it: a call that
    reaches it then is cancelled, not safely retryable. So its first refusal ejects it
    for ``max_time``, and answers to calls sent before the refusal do not end that."""
    clock = FakeClock()
    balancer = Balancer(
        [A1, B],
        node="a",
        zone=None,
        ejection=EjectionPolicy(base_time=0.5, max_time=5),
        clock=clock,
    )
    balancer.record_stopping(A1)
    clock.now += 1.0  # past the first failure's 0.5 s
    balancer.record_success(A1)  # a call sent before the refusal answers late
    assert balancer.order() == [B, A1]
    clock.now += 4.01  # max_time over: a real call may find a restarted server
    assert balancer.order() == [A1, B]
    balancer.record_success(A1)
    balancer.record_connection_failure(A1)  # the count restarted: the first failure's time
    clock.now += 0.51
    assert balancer.order()[0] == A1
