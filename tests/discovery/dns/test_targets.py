"""dns target parsing and IP-literal names (no DNS traffic)."""

from __future__ import annotations

import pytest

from protoc_gen_localfirst.runtime.discovery import DnsOptions, make_source
from protoc_gen_localfirst.runtime.discovery.dns import DnsSource
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, TargetError
from tests.discovery.dns.conftest import Recorder


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("dns:///greeter.test", "has no port; dns targets need one"),
        ("dns:///[::1]", "has no port; dns targets need one"),
        ("dns:///greeter.test:0", "not a number in 1-65535"),
        ("dns:///greeter.test:http", "not a number in 1-65535"),
        ("dns:///", "names no host"),
        ("dns:///:50051", "names no host"),
        ("dns:///bad name!:50051", "is not a DNS name"),
        ("dns:///a..b:50051", "is not a DNS name"),
        ("dns:///-a.test:50051", "is not a DNS name"),
        ("dns:///" + "a" * 64 + ".test:50051", "is not a DNS name"),
        ("dns:///::1:50051", "needs brackets"),
        ("dns:///[greeter.test]:50051", "in brackets is not an IPv6 address"),
        ("dns://dns.example/greeter.test:50051", "must be an IP address"),
        ("dns://127.0.0.1:0/greeter.test:50051", "not a number in 1-65535"),
        ("dns://127.0.0.1:99999/greeter.test:50051", "not a number in 1-65535"),
        ("dns://::1/greeter.test:50051", "needs brackets"),
        ("dns://[::1/greeter.test:50051", "DNS server"),
    ],
)
def test_bad_target_is_rejected_at_construction(target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message) as info:
        make_source(target, dns=DnsOptions())
    assert repr(target) in str(info.value)


def test_missing_port_error_says_why_not_443() -> None:
    with pytest.raises(TargetError) as info:
        make_source("dns:///greeter.test")
    assert "443" in str(info.value)
    assert "dns:///NAME:PORT" in str(info.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("dns:///127.0.0.5:50051", [Endpoint("127.0.0.5", 50051)]),
        ("dns:///[::1]:50051", [Endpoint("::1", 50051)]),
        ("dns:///[fd00::0:7]:7", [Endpoint("fd00::7", 7)]),
        ("dns://127.0.0.1:1/127.0.0.5:8", [Endpoint("127.0.0.5", 8)]),
    ],
)
def test_ip_literal_name_is_a_fixed_set_without_dns(target: str, expected: list[Endpoint]) -> None:
    src = make_source(target)
    assert isinstance(src, DnsSource)
    recorder = Recorder()
    src.start(recorder)
    # Pushed synchronously, once; no thread, no lookup.
    assert recorder.sets == [expected]
    assert src.lookups == 0
    assert src.last_error is None
    src.request_refresh()
    src.close()
    assert recorder.sets == [expected]


def test_start_twice_is_an_error() -> None:
    src = make_source("dns:///127.0.0.5:50051")
    src.start(Recorder())
    with pytest.raises(RuntimeError, match="twice"):
        src.start(Recorder())
