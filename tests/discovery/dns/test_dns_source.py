"""DnsSource against a real dnsmasq: resolution, refresh timing, failures, close.

Timing assertions use generous bounds: "not yet after X s" checks leave at
least 0.5 s of margin to the scheduled time, "eventually" checks wait up to 5 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import dns.resolver
import pytest

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from tests.discovery.dns.conftest import PORT, DnsmasqFactory, SourceFactory, dns_records, eps
from tests.support.dnsmasq import free_port
from tests.support.waiting import wait_until


def test_first_resolution(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.42", "127.0.0.41"]})
    src, rec = source(server.target("greeter.test", PORT), start=False)
    t0 = time.monotonic()
    src.start(rec)
    assert time.monotonic() - t0 < 1.0, "start must not wait for DNS"
    rec.wait_for(eps("127.0.0.41", "127.0.0.42"))  # sorted, node/zone unknown
    assert src.last_error is None
    assert src.lookups == 1
    assert server.query_count("greeter.test", "A") >= 1
    assert server.query_count("greeter.test", "AAAA") >= 1


def test_a_and_aaaa(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    server = dnsmasq(
        {
            "both.test": ["fd00::2", "127.0.0.41", "::1", "127.0.0.9"],
            "v4.test": ["127.0.0.41"],  # AAAA: empty NOERROR (--local)
            "v6.test": ["::1"],  # A: empty NOERROR
        }
    )
    _, both = source(server.target("both.test", PORT))
    _, v4 = source(server.target("v4.test", PORT))
    _, v6 = source(server.target("v6.test", PORT))
    both.wait_for(eps("127.0.0.9", "127.0.0.41", "::1", "fd00::2"))
    v4.wait_for(eps("127.0.0.41"))
    v6.wait_for(eps("::1"))


def test_empty_answer_is_a_real_state(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    # The name exists (TXT) but has no address: pushed as the empty set, first time too.
    server = dnsmasq({"svc.test": ["127.0.0.41"]}, exists=["empty.test", "svc.test"])
    empty_src, empty = source(server.target("empty.test", PORT))
    wait_until(lambda: empty.sets == [[]], what="an empty first push")
    assert empty_src.last_error is None
    # Scale to zero after a good answer: NOERROR with no records empties the set.
    svc_src, svc = source(server.target("svc.test", PORT), min_interval=0.1)
    svc.wait_for(eps("127.0.0.41"))
    server.set_records({})
    svc.wait_for([])
    assert svc_src.last_error is None
    # ...and back up: an empty answer is re-checked after min_interval, not its negative TTL.
    server.set_records({"svc.test": ["127.0.0.42"]})
    svc.wait_for(eps("127.0.0.42"))


def test_ttl_refresh_picks_up_a_change(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    src, rec = source(server.target("greeter.test", PORT), min_interval=0.1)
    rec.wait_for(eps("127.0.0.41"))
    server.set_records({"greeter.test": ["127.0.0.42", "127.0.0.43"]})
    t0 = time.monotonic()
    rec.wait_for(eps("127.0.0.42", "127.0.0.43"))
    # Driven by the 1 s TTL, not by polling as fast as min_interval allows.
    assert src.lookups <= 2 + (time.monotonic() - t0) / 1.0 + 1
    time.sleep(1.5)  # scenario: past the 1 s TTL, to show an unchanged answer changes nothing
    assert len(rec.sets) == 2, "an unchanged answer is not pushed again"


def test_long_ttl_is_clamped_to_max_interval(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=600)
    _, rec = source(server.target("greeter.test", PORT), min_interval=0.1, max_interval=0.5)
    rec.wait_for(eps("127.0.0.41"))
    server.set_records({"greeter.test": ["127.0.0.42"]})
    rec.wait_for(eps("127.0.0.42"))


def test_change_is_not_seen_before_the_ttl(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=3)
    src, rec = source(server.target("greeter.test", PORT), min_interval=0.1)
    first = rec.wait_for(eps("127.0.0.41"))
    server.set_records({"greeter.test": ["127.0.0.42"]})
    # scenario: 1.5 s into the 3 s TTL, to show nothing was re-resolved yet
    time.sleep(max(0.0, first + 1.5 - time.monotonic()))
    assert src.lookups == 1, "re-resolved before the 3 s TTL ran out"
    assert rec.sets == [eps("127.0.0.41")]
    changed = rec.wait_for(eps("127.0.0.42"), timeout=6)
    assert changed - first >= 1.5


def test_change_is_not_seen_before_min_interval(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    src, rec = source(server.target("greeter.test", PORT), min_interval=2.5)
    first = rec.wait_for(eps("127.0.0.41"))
    server.set_records({"greeter.test": ["127.0.0.42"]})
    # scenario: past the 1 s TTL but inside min_interval, to show nothing was re-resolved
    time.sleep(max(0.0, first + 1.5 - time.monotonic()))
    assert src.lookups == 1, "re-resolved before min_interval although the TTL is 1 s"
    rec.wait_for(eps("127.0.0.42"), timeout=6)


def test_request_refresh_is_immediate_then_rate_limited_and_coalesced(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=600)
    src, rec = source(
        server.target("greeter.test", PORT),
        min_interval=30,
        max_interval=60,
        failure_refresh_interval=1.0,
    )
    rec.wait_for(eps("127.0.0.41"))
    server.set_records({"greeter.test": ["127.0.0.42"]})

    t0 = time.monotonic()
    src.request_refresh()
    rec.wait_for(eps("127.0.0.42"), timeout=0.8)  # at once, not after the 600 s TTL
    assert src.lookups == 2

    server.set_records({"greeter.test": ["127.0.0.43"]})
    queries = server.query_count("greeter.test", "A")  # after set_records' own checks
    for _ in range(5):  # five failures inside the interval
        src.request_refresh()
        time.sleep(0.02)  # scenario: the requests come 20 ms apart
    # scenario: 0.5 s into the 1 s failure_refresh_interval, to show no second lookup yet
    time.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
    assert src.lookups == 2, "a second failure refresh within failure_refresh_interval"
    assert rec.latest == eps("127.0.0.42")
    # Coalesced into exactly one lookup at the end of the interval, not dropped.
    rec.wait_for(eps("127.0.0.43"), timeout=3)
    assert src.lookups == 3
    time.sleep(1.3)  # scenario: past another interval, to show no further lookup follows
    assert src.lookups == 3, "the five requests caused more than one lookup"
    # dnsmasq saw the same: the five requests reached it as one A query.
    wait_until(
        lambda: server.query_count("greeter.test", "A") - queries == 1,
        what="dnsmasq to log exactly one more A query",
    )


def test_nxdomain_before_any_answer_pushes_nothing(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({})
    target = server.target("greeter.test", PORT)
    # The backoff doubles per failure up to max_interval: capped low, the retry that
    # finds the new record comes within 0.8 s however long the failures went on.
    # Uncapped (30 s), a slow start on a busy machine lets it outgrow rec.wait_for's 5 s.
    src, rec = source(target, min_interval=0.2, max_interval=0.8)
    wait_until(lambda: src.last_error is not None, what="a lookup error")
    assert src.last_error == (
        f"{target}: DNS server {server.server} says greeter.test does not exist (NXDOMAIN)"
    )
    wait_until(lambda: src.lookups >= 3, what="two NXDOMAIN retries", timeout=5)
    assert rec.sets == []
    # The name appears: found by the retry backoff (from min_interval).
    server.set_records({"greeter.test": ["127.0.0.41"]})
    rec.wait_for(eps("127.0.0.41"))
    assert src.last_error is None
    assert rec.sets == [eps("127.0.0.41")]


def test_a_reload_between_the_a_and_aaaa_queries_pushes_no_empty_set(
    dnsmasq: DnsmasqFactory, source: SourceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race CI once hit, made certain: dnsmasq reloads its records after the A
    # query (NXDOMAIN) and before the AAAA query (NOERROR, no AAAA records). Those
    # two answers are no empty set a server stands behind; the lookup must fail
    # and be retried, not push [].
    server = dnsmasq({})
    target = server.target("greeter.test", PORT)
    real_resolve = dns.resolver.Resolver.resolve
    reloaded = threading.Event()

    def resolve(self: dns.resolver.Resolver, qname: str, rdtype: str, **kwargs: Any) -> Any:
        try:
            return real_resolve(self, qname, rdtype, **kwargs)
        except dns.resolver.NXDOMAIN:
            if rdtype == "A" and not reloaded.is_set():
                server.set_records({"greeter.test": ["127.0.0.41"]})
                reloaded.set()
            raise

    monkeypatch.setattr(dns.resolver.Resolver, "resolve", resolve)
    src, rec = source(target, min_interval=0.2, max_interval=0.8)
    rec.wait_for(eps("127.0.0.41"))
    assert reloaded.is_set()
    assert server.query_count("greeter.test", "AAAA") >= 2, "the AAAA query after the reload"
    assert rec.sets == [eps("127.0.0.41")]
    assert src.last_error is None


def test_nxdomain_after_a_good_answer_keeps_the_last_good_set(
    dnsmasq: DnsmasqFactory, source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="protoc_gen_localfirst.discovery.dns")
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    target = server.target("greeter.test", PORT)
    src, rec = source(target, min_interval=0.1)
    rec.wait_for(eps("127.0.0.41"))
    good_lookups = src.lookups

    server.set_records({})
    wait_until(
        lambda: src.last_error is not None and "NXDOMAIN" in src.last_error,
        what="an NXDOMAIN lookup error",
    )
    assert target in (src.last_error or "")
    wait_until(lambda: src.lookups >= good_lookups + 3, what="retries during the failure")
    assert rec.sets == [eps("127.0.0.41")], "a failed lookup must not change the set"
    warnings = dns_records(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "NXDOMAIN" in warnings[0] and "keeping the last 1 endpoint(s)" in warnings[0]
    assert dns_records(caplog, logging.INFO) == []

    server.set_records({"greeter.test": ["127.0.0.42"]})
    rec.wait_for(eps("127.0.0.42"))
    assert src.last_error is None
    infos = dns_records(caplog, logging.INFO)
    assert len(infos) == 1 and "answers again" in infos[0], infos
    assert len(dns_records(caplog, logging.WARNING)) == 1


def test_server_stopped_after_a_good_answer(
    dnsmasq: DnsmasqFactory, source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="protoc_gen_localfirst.discovery.dns")
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    target = server.target("greeter.test", PORT)
    src, rec = source(target, min_interval=0.1, timeout=0.3)
    rec.wait_for(eps("127.0.0.41"))

    server.stop()
    expected = f"{target}: DNS server {server.server} did not answer within 0.3 s"
    wait_until(lambda: src.last_error == expected, what=f"last_error {expected!r}")
    failed_from = src.lookups
    wait_until(lambda: src.lookups >= failed_from + 2, what="retries while the server is down")
    assert rec.sets == [eps("127.0.0.41")]
    assert len(dns_records(caplog, logging.WARNING)) == 1

    server.set_records({"greeter.test": ["127.0.0.41", "127.0.0.42"]})  # read at start
    server.start()  # same port
    rec.wait_for(eps("127.0.0.41", "127.0.0.42"))
    assert src.last_error is None
    assert len(dns_records(caplog, logging.INFO)) == 1
    assert len(dns_records(caplog, logging.WARNING)) == 1


def test_unreachable_server_times_out(source: SourceFactory) -> None:
    port = free_port()  # nothing listens there
    target = f"dns://127.0.0.1:{port}/greeter.test:{PORT}"
    src, rec = source(target, start=False, timeout=2.0)
    t0 = time.monotonic()
    src.start(rec)
    # Generous bound, not a timing target: a start that waited would take the 2 s timeout.
    assert time.monotonic() - t0 < 1.0, "start must not wait for DNS"
    expected = f"{target}: DNS server 127.0.0.1:{port} did not answer within 2.0 s"
    wait_until(lambda: src.last_error == expected, what=f"last_error {expected!r}")
    assert rec.sets == []


def test_unreachable_ipv6_server_is_named_in_brackets(source: SourceFactory) -> None:
    port = free_port()
    target = f"dns://[::1]:{port}/greeter.test:{PORT}"
    src, rec = source(target, timeout=0.3)
    wait_until(lambda: src.last_error is not None, what="a lookup error")
    assert (src.last_error or "").startswith(f"{target}: DNS server [::1]:{port} ")
    assert rec.sets == []


def test_refused_is_a_failure_with_the_rcode(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]})
    target = server.target("greeter.example", PORT)  # outside --local, no upstream: REFUSED
    src, rec = source(target)
    wait_until(lambda: src.last_error is not None, what="a lookup error")
    assert src.last_error == (
        f"{target}: DNS server {server.server} failed to answer greeter.example A: REFUSED; "
        f"DNS server {server.server} failed to answer greeter.example AAAA: REFUSED"
    )
    assert rec.sets == []


def test_system_resolver_config_is_named_in_errors(source: SourceFactory) -> None:
    # dns:/// uses /etc/resolv.conf; an .invalid name never resolves (RFC 6761).
    src, rec = source(f"dns:///localfirst-test.invalid:{PORT}", timeout=0.5)
    wait_until(lambda: src.last_error is not None, what="a lookup error")
    assert "/etc/resolv.conf" in (src.last_error or "")
    assert (src.last_error or "").startswith(f"dns:///localfirst-test.invalid:{PORT}: ")
    assert rec.sets == []


def test_close_stops_the_thread_promptly(dnsmasq: DnsmasqFactory, source: SourceFactory) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    src, rec = source(server.target("greeter.test", PORT), min_interval=0.05)
    rec.wait_for(eps("127.0.0.41"))
    thread = src._thread
    assert thread is not None and thread.is_alive()
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 1.0  # its next refresh would be up to 1 s (TTL) away
    thread.join(timeout=1.0)
    assert not thread.is_alive()
    server.set_records({"greeter.test": ["127.0.0.42"]})
    src.request_refresh()
    time.sleep(1.2)  # scenario: past the 1 s TTL, to show a closed source pushes nothing
    assert rec.sets == [eps("127.0.0.41")]


def test_close_during_a_lookup_returns_at_once(source: SourceFactory) -> None:
    target = f"dns://127.0.0.1:{free_port()}/greeter.test:{PORT}"
    src, rec = source(target, timeout=3.0)
    # the lookup is now waiting for an answer
    wait_until(lambda: src.lookups == 1, what="the first lookup to start")
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 1.5, "close waited for the DNS lookup (3 s)"
    assert src._thread is not None
    src._thread.join(timeout=5.0)  # ends once the lookup gives up (timeout 3 s)
    assert not src._thread.is_alive()
    assert rec.sets == []


def test_close_waits_for_a_listener_call_in_progress(
    dnsmasq: DnsmasqFactory, source: SourceFactory
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]})
    entered, release = threading.Event(), threading.Event()
    calls: list[list[Endpoint]] = []

    def slow_listener(endpoints: Sequence[Endpoint]) -> None:
        entered.set()
        release.wait(5)
        calls.append(list(endpoints))

    src, _ = source(server.target("greeter.test", PORT), start=False)
    src.start(slow_listener)
    assert entered.wait(5)
    closer = threading.Thread(target=src.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close returned while the listener was still running"
    release.set()
    closer.join(2)
    assert not closer.is_alive()
    assert calls == [eps("127.0.0.41")]


def test_a_failing_listener_does_not_stop_discovery(
    dnsmasq: DnsmasqFactory, source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = dnsmasq({"greeter.test": ["127.0.0.41"]}, ttl=1)
    seen: list[list[Endpoint]] = []

    def listener(endpoints: Sequence[Endpoint]) -> None:
        seen.append(list(endpoints))
        if len(seen) == 1:
            raise RuntimeError("listener bug")

    src, _ = source(server.target("greeter.test", PORT), start=False, min_interval=0.1)
    src.start(listener)
    wait_until(lambda: len(seen) == 1, what="the first push")
    server.set_records({"greeter.test": ["127.0.0.42"]})
    wait_until(lambda: seen[-1] == eps("127.0.0.42"), what="the push of 127.0.0.42")
    assert any("listener failed" in m for m in dns_records(caplog, logging.ERROR))
