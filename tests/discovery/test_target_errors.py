"""What a user sees for targets that cannot be used: the exact messages.

Each message names the target, says what is wrong and, where there is one,
the target that was probably meant.
"""

from __future__ import annotations

import pytest

from protoc_gen_localfirst.runtime.discovery import make_source
from protoc_gen_localfirst.runtime.discovery.endpoints import (
    STATIC_FORMAT,
    TARGET_FORMATS,
    TargetError,
)
from protoc_gen_localfirst.runtime.discovery.static import StaticSource


def message_of(target: str) -> str:
    with pytest.raises(TargetError) as info:
        make_source(target)
    return str(info.value)


def test_grpc_ipv4_scheme_suggests_the_static_target() -> None:
    assert message_of("ipv4:127.0.0.1:50051") == (
        "target 'ipv4:127.0.0.1:50051': grpc's ipv4: scheme is not supported here "
        "(it names no nodes); write static:///127.0.0.1:50051@NODE (NODE: the node each "
        f"replica runs on); use {STATIC_FORMAT}"
    )


def test_grpc_ipv6_scheme_with_several_addresses() -> None:
    assert message_of("ipv6:[::1]:1,[::1]:2") == (
        "target 'ipv6:[::1]:1,[::1]:2': grpc's ipv6: scheme is not supported here "
        "(it names no nodes); write static:///[::1]:1@NODE,[::1]:2@NODE (NODE: the node each "
        f"replica runs on); use {STATIC_FORMAT}"
    )


def test_no_scheme_suggests_dns_for_names_and_static_for_addresses() -> None:
    assert message_of("greeter.test:50051") == (
        "target 'greeter.test:50051' has no scheme; for a DNS name write "
        f"dns:///greeter.test:50051; use {TARGET_FORMATS}"
    )
    assert message_of("10.0.0.1:50051") == (
        "target '10.0.0.1:50051' has no scheme; for a fixed address write "
        f"static:///10.0.0.1:50051@NODE; use {TARGET_FORMATS}"
    )
    assert message_of("greeter") == f"target 'greeter' has no scheme; use {TARGET_FORMATS}"


def test_a_known_scheme_without_slashes() -> None:
    assert message_of("dns:greeter.test:50051") == (
        "target 'dns:greeter.test:50051': write the scheme with '://': dns:///greeter.test:50051"
    )


def test_an_unknown_scheme_without_slashes() -> None:
    assert message_of("unix:/run/greeter.sock") == (
        "target 'unix:/run/greeter.sock': scheme 'unix' is not supported (and needs '://'); "
        "supported: static://, dns://, kubernetes://"
    )


def test_static_host_names_are_refused_with_the_dns_target() -> None:
    assert message_of("static:///greeter.test:50051") == (
        "target 'static:///greeter.test:50051': 'greeter.test' is not an IP address; static "
        "targets take IP addresses (for a DNS name write dns:///greeter.test:50051); "
        f"use {STATIC_FORMAT}"
    )


def test_static_at_without_node() -> None:
    assert message_of("static:///127.0.0.1:50051@") == (
        "target 'static:///127.0.0.1:50051@': '127.0.0.1:50051@' has '@' but no node name "
        "after it; write IP:PORT@NODE, or IP:PORT alone when the node is unknown"
    )


def test_static_slash_without_zone() -> None:
    assert message_of("static:///127.0.0.1:50051@node-a/") == (
        "target 'static:///127.0.0.1:50051@node-a/': '127.0.0.1:50051@node-a/' has '/' but "
        "no zone name after it; write IP:PORT@NODE/ZONE, or IP:PORT@NODE"
    )


def test_static_semicolons() -> None:
    assert message_of("static:///a:1;b:2") == (
        f"target 'static:///a:1;b:2': separate endpoints with ',', not ';'; use {STATIC_FORMAT}"
    )


def test_a_colon_in_a_host_that_is_no_ipv6_address() -> None:
    assert message_of("dns:///a:1;b:2") == (
        "target 'dns:///a:1;b:2': 'a:1;b' in 'a:1;b:2' is not a host "
        "(expected one HOST:PORT, IPv6 as [ADDRESS]:PORT)"
    )
    assert message_of("static:///::1:80") == (
        "target 'static:///::1:80': IPv6 address in '::1:80' needs brackets: [::1]:PORT"
    )


def test_good_static_targets_still_parse() -> None:
    source = make_source("static:///10.0.0.1:1@a/z1,[::1]:2,10.0.0.3:3@c")
    assert isinstance(source, StaticSource)
    assert [(e.address, e.node, e.zone) for e in source.endpoints] == [
        ("10.0.0.1:1", "a", "z1"),
        ("[::1]:2", None, None),
        ("10.0.0.3:3", "c", None),
    ]
