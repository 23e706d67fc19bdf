"""``order.Order``: one call's endpoint order, made in O(1) and read lazily.

It must read exactly as the list it stands for: tiers nearest first, each
rotated by the call's turn, the first two of a tier swapped when the second
is less loaded, ejected endpoints last.
"""

from __future__ import annotations

import pytest

from protoc_gen_localfirst.runtime.client.balancer import REPORT_INTERVAL, Balancer
from protoc_gen_localfirst.runtime.client.order import Order
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.loadreport import LoadReport

LOCAL = tuple(Endpoint(f"10.0.0.{i}", 1, node="a", zone="z") for i in range(1, 4))
ZONE = tuple(Endpoint(f"10.0.1.{i}", 1, node=f"n{i}", zone="z") for i in range(1, 6))
FAR = tuple(Endpoint(f"10.0.2.{i}", 1, node=f"m{i}", zone="y") for i in range(1, 3))


def as_list(tiers: tuple[tuple[Endpoint, ...], ...], turn: int, swapped: int) -> list[Endpoint]:
    """What ``Order`` stands for, built the obvious way."""
    flat: list[Endpoint] = []
    for position, group in enumerate(tiers):
        first = turn % len(group)
        rotated = [*group[first:], *group[:first]]
        if swapped >> position & 1:
            rotated[0], rotated[1] = rotated[1], rotated[0]
        flat.extend(rotated)
    return flat


@pytest.mark.parametrize("turn", [0, 1, 2, 7, 1000])
@pytest.mark.parametrize("swapped", [0, 0b001, 0b010, 0b011])
def test_an_order_reads_as_the_rotated_and_swapped_tiers_then_the_last(
    turn: int, swapped: int
) -> None:
    tiers = (LOCAL, ZONE)
    order = Order(tiers, turn, swapped, last=FAR[::-1])
    expected = [*as_list(tiers[:2], turn, swapped), *FAR[::-1]]
    assert list(order) == expected
    assert order == expected
    assert len(order) == len(expected)
    assert [order[i] for i in range(-len(expected), 0)] == expected  # negative indexes
    assert order[2:6] == expected[2:6]
    assert [order.cycle(i) for i in range(25)] == [expected[i % 10] for i in range(25)]
    assert order[-1] == FAR[0]  # the last group is read as it is, not rotated


def test_reading_past_the_end_raises_index_error() -> None:
    order = Order((LOCAL,), 0, 0)
    with pytest.raises(IndexError):
        order[len(LOCAL)]
    with pytest.raises(IndexError):
        order[-len(LOCAL) - 1]
    assert list(Order((), 0, 0)) == []


def test_cycling_an_empty_order_gives_none_and_an_order_of_ejected_ones_reads_them() -> None:
    assert Order((), 0, 0).cycle(0) is None
    only_ejected = Order((), 5, 0, last=FAR)
    assert [only_ejected.cycle(i) for i in range(4)] == [*FAR, *FAR]


def test_plans_match_the_full_sort_whatever_the_number_of_endpoints() -> None:
    """The O(1) plan gives the same endpoints in the same tiers as ordering them all."""
    many = tuple(
        Endpoint(f"10.1.{i // 250}.{i % 250}", 1, node=f"n{i}", zone="z") for i in range(1000)
    )
    balancer = Balancer((*LOCAL, *many), node="a", zone="z")
    for _ in range(5):
        order, spill = balancer.plan()
        assert spill is None
        assert len(order) == 1003
        assert set(order[:3]) == set(LOCAL)
        assert set(order[3:]) == set(many)


def test_the_spill_swaps_the_first_two_tiers_with_their_choices() -> None:
    balancer = Balancer((*LOCAL, *ZONE), node="a", zone="z")
    full = LoadReport(in_flight=10, limit=1)
    for endpoint in LOCAL:
        balancer.attempt_started(endpoint, 0.0)
        balancer.attempt_ended(endpoint, None, full)
    order, spill = balancer.plan()
    assert spill == "full"
    assert set(order[:5]) == set(ZONE) and set(order[5:]) == set(LOCAL)


def test_report_bytes_are_decoded_only_when_the_last_report_is_stale() -> None:
    from protoc_gen_localfirst.runtime.loadreport import encode

    now = [100.0]
    balancer = Balancer(LOCAL[:1], node="a", zone="z", clock=lambda: now[0])
    endpoint = LOCAL[0]
    assert balancer.attempt_started(endpoint, now[0])  # never reported: read its trailers
    balancer.attempt_ended(endpoint, 0.001, encode(LoadReport(in_flight=3, limit=8)))
    load = balancer.load_of(endpoint)
    assert load is not None and load.report == LoadReport(in_flight=3, limit=8)
    now[0] += REPORT_INTERVAL / 2
    assert not balancer.attempt_started(endpoint, now[0])  # fresh: this answer's are skipped
    balancer.attempt_ended(endpoint, 0.001, encode(LoadReport(in_flight=5, limit=8)))
    assert load.report == LoadReport(in_flight=3, limit=8)  # within the interval: not decoded
    now[0] += REPORT_INTERVAL
    assert balancer.attempt_started(endpoint, now[0])  # due again
    balancer.attempt_ended(endpoint, 0.001, encode(LoadReport(in_flight=5, limit=8)))
    assert load.report == LoadReport(in_flight=5, limit=8)
    assert load.outstanding == 0


def test_an_endpoint_without_a_known_node_always_wants_its_trailers() -> None:
    unknown = Endpoint("10.0.9.1", 1)
    balancer = Balancer((unknown,), node="a", zone=None)
    assert balancer.attempt_started(unknown, 0.0)
    balancer.attempt_ended(unknown, 0.001, LoadReport(in_flight=1, limit=8))
    assert balancer.attempt_started(unknown, 0.0)  # its server names the node there
