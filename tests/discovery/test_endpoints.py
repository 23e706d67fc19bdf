import pytest

from protoc_gen_localfirst.runtime.discovery.endpoints import (
    Endpoint,
    TargetError,
    parse_static,
    parse_target,
)


def test_static_target_with_nodes_and_zones() -> None:
    endpoints = parse_static(
        parse_target("static:///10.0.0.1:50051@node-a/zone-1,[::1]:7000@node-b,10.0.0.3:1")
    )
    assert endpoints == [
        Endpoint("10.0.0.1", 50051, node="node-a", zone="zone-1"),
        Endpoint("::1", 7000, node="node-b"),
        Endpoint("10.0.0.3", 1),
    ]
    assert endpoints[1].address == "[::1]:7000"
    assert endpoints[1].channel_target == "ipv6:[::1]:7000"
    assert endpoints[0].channel_target == "ipv4:10.0.0.1:50051"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("10.0.0.1:50051", "has no scheme"),
        ("bogus:///10.0.0.1:1", "scheme 'bogus' is not supported"),
        ("static://auth/10.0.0.1:1", "static targets take no authority"),
        ("static:///10.0.0.1", "has no port"),
        ("static:///10.0.0.1:99999", "not a number in 1-65535"),
        ("static:///::1:80", "needs brackets"),
        ("static:///10.0.0.1:1,,10.0.0.2:1", "empty endpoint"),
        ("static:///10.0.0.1:1@a,10.0.0.1:1@b", "more than once"),
    ],
)
def test_bad_targets_say_what_is_wrong(target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_static(parse_target(target))
