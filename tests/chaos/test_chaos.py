"""Chaos under steady load: kill, freeze, redeploy, DNS flap.

Each scenario runs a bounded load (4 workers, SayHello with a unique id per
call and WhoAmI alternating, 1 s deadline per call) for a few seconds around
one event, then prints: calls and failed calls (per method), p99 latency of
the calls in flight during the event, time to first success elsewhere, how
long callers were disturbed (last failed or slow call), and how often a
SayHello ran more than once, counted from the replicas' execution files.

Always asserted: no SayHello (not idempotent) executed twice. Kill, redeploy
and DNS flap must also fail no call. What a frozen (SIGSTOP) replica costs
depends on per-attempt timeouts and hedging in the runtime; see
``test_freeze_local_replica``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import pytest
from greeter.v1.greeter_localfirst import GreeterClient

from demo.load import CallFn, Load, greeter_calls
from protoc_gen_localfirst.runtime import DnsOptions
from tests.chaos.conftest import features, resilience_options
from tests.support.cluster import Pods
from tests.support.load import count_executions
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.chaos

CALL_TIMEOUT = 1.0
FAST_DNS = DnsOptions(min_interval=0.2, max_interval=5.0, failure_refresh_interval=0.2, timeout=0.5)
MIX = ("SayHello", "WhoAmI")


def calls_of(client: GreeterClient) -> CallFn:
    return greeter_calls(client, CALL_TIMEOUT)


def load_on(client: GreeterClient) -> Load:
    return Load(calls_of(client), workers=4, pause=0.005, timeout=CALL_TIMEOUT, mix=MIX)


def report(
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    pods: Pods,
    load: Load,
    event: tuple[float, float],
    elsewhere: float | None,
    extra: str = "",
) -> int:
    """Print the scenario's numbers; return the number of duplicate SayHello executions."""
    since, until = event
    before = [c for c in load.calls if c.ended < since and c.ok]
    slow = max(0.05, 5 * load.p99_ms(before) / 1000) if before else 0.05
    executions = count_executions(pods.executions)
    failed = {m: len(load.failures(m)) for m in MIX}
    codes = sorted({c.code or "" for c in load.failures()})
    with capsys.disabled():
        print(
            f"\n  [chaos] {scenario}: {len(load.calls)} calls, failed SayHello {failed['SayHello']}"
            f" / WhoAmI {failed['WhoAmI']} {codes if codes else ''}; "
            f"p99 during event {load.p99_ms(load.during(since, until)):.1f} ms "
            f"(before {load.p99_ms(before):.1f} ms); "
            f"first success elsewhere {_s(elsewhere)}; disturbed for "
            f"{load.recovered_after(since, slow):.2f} s (failed or > {slow * 1000:.0f} ms); "
            f"SayHello executed {executions.total} times for "
            f"{len([c for c in load.calls if c.method == 'SayHello'])} calls, "
            f"duplicates {executions.duplicate_count}{extra}"
        )
    return executions.duplicate_count


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


async def test_kill_local_replica(pods: Pods, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL the local replica three times (restarted in between), SayHello only.

    Each kill can land while a SayHello has run but not yet answered (the
    handler works 2 ms after recording): retrying that call elsewhere would
    run it twice. Three kills make such a window likely to be hit.
    """
    target = pods.static_target("a1", "b1", "b2")
    a1 = pods.running["a1"]
    kills: list[float] = []
    async with (
        GreeterClient(target, node="node-a", **resilience_options()) as client,
        Load(calls_of(client), workers=4, pause=0.002, timeout=CALL_TIMEOUT) as load,
    ):
        for _ in range(3):
            await load.wait_for(lambda c: c.replica == "a1", since=time.monotonic())
            await asyncio.sleep(0.5)  # scenario: calls run on a1 for 0.5 s before the kill
            kills.append(time.monotonic())
            await asyncio.to_thread(a1.kill, signal.SIGKILL)
            await asyncio.sleep(1.0)  # scenario: a1 stays down 1 s under load
            await asyncio.to_thread(a1.start)  # returns once a1 is SERVING
    killed = kills[0]
    elsewhere = load.first_success(killed, lambda r: r != "a1")
    duplicates = report(
        capsys, "kill local (SIGKILL a1, 3 times)", pods, load, (killed, killed + 1.0), elsewhere
    )
    assert duplicates == 0, count_executions(pods.executions).duplicates
    # Reads are retried elsewhere. A SayHello in flight at a kill may already have
    # run: it fails rather than risk running twice (only those, one per worker at most).
    assert load.failures("WhoAmI") == [], load.failures("WhoAmI")[:5]
    in_flight = load.failures("SayHello")
    assert len(in_flight) <= len(kills) * 4, in_flight[:5]
    assert all(c.code == "UNAVAILABLE" for c in in_flight), in_flight[:5]


async def test_freeze_local_replica(pods: Pods, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGSTOP the local replica for 3 s: connections stay open, nothing answers.

    Without per-attempt timeouts every call sent to it waits for its whole
    deadline. With them (and hedging for NO_SIDE_EFFECTS WhoAmI), WhoAmI must
    not fail. SayHello may time out on the frozen replica: it was sent, so it
    must not be retried elsewhere (it will run when the replica continues);
    those are counted and printed, and no SayHello may run twice.
    """
    have = features()
    target = pods.static_target("a1", "b1", "b2")
    frozen_pid = pods.pid("a1")
    async with (
        GreeterClient(target, node="node-a", **resilience_options()) as client,
        load_on(client) as load,
    ):
        await load.wait_for(lambda c: c.replica == "a1", since=0)
        await asyncio.sleep(1.0)  # scenario: 1 s of calls before the event (p99 "before")
        stopped = time.monotonic()
        os.kill(frozen_pid, signal.SIGSTOP)
        pods.stopped_pids.add(frozen_pid)
        try:
            await asyncio.sleep(3.0)  # scenario: a1 stays frozen 3 s under load
        finally:
            os.kill(frozen_pid, signal.SIGCONT)
            pods.stopped_pids.discard(frozen_pid)
        continued = time.monotonic()
        await asyncio.sleep(1.5)  # scenario: load keeps running 1.5 s after SIGCONT
    # The continued replica works off its backlog: wait until its execution
    # records stop changing (three polls 0.2 s apart) before counting duplicates.
    seen: list[int] = []

    def backlog_done() -> bool:
        seen.append(count_executions(pods.executions).total)
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    await wait_until_async(
        backlog_done, what="the replicas' execution records to settle", timeout=10, interval=0.2
    )
    elsewhere = load.first_success(stopped, lambda r: r != "a1")
    back = load.first_success(continued, lambda r: r == "a1")
    duplicates = report(
        capsys, "freeze local (SIGSTOP a1 3 s)", pods, load, (stopped, continued), elsewhere,
        f"; local again {_s(back)} after SIGCONT; runtime has: {sorted(have) or 'no per-attempt timeout, no hedging'}",
    )  # fmt: skip
    assert duplicates == 0
    assert load.calls and load.calls[-1].ok
    if {"per_attempt_timeout", "hedging_delay"} <= have:
        assert load.failures("WhoAmI") == [], load.failures("WhoAmI")[:5]
    else:
        # What the runtime as it is can do: calls that went to the frozen
        # replica wait out their deadline; report them (printed above).
        assert all(c.code == "DEADLINE_EXCEEDED" for c in load.failures()), load.failures()[:5]


async def test_redeploy_all_replicas(dns_pods: Pods, capsys: pytest.CaptureFixture[str]) -> None:
    pods = dns_pods
    async with (
        GreeterClient(
            pods.dns_target, node="node-a", dns=FAST_DNS, **resilience_options()
        ) as client,
        load_on(client) as load,
    ):
        await load.wait_for(lambda c: c.replica == "a1", since=0)
        for name, node, host in [
            ("a2", "node-a", "127.0.0.177"),
            ("b3", "node-b", "127.0.0.178"),
            ("b4", "node-b", "127.0.0.179"),
        ]:
            await asyncio.to_thread(pods.start, name, node, host)
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a2", "b3", "b4")
        # Rolling update: the old pods get SIGTERM right after the endpoints change.
        await asyncio.gather(*(asyncio.to_thread(pods.stop, old) for old in ("a1", "b1", "b2")))
        settled = time.monotonic()
        await asyncio.sleep(1.5)  # scenario: load keeps running 1.5 s after the rollout
    landed = load.first_success(published, lambda r: r in {"a2", "b3", "b4"})
    local = load.first_success(published, lambda r: r == "a2")
    duplicates = report(
        capsys, "redeploy all (new IPs in DNS, old SIGTERM)", pods, load, (published, settled),
        landed, f"; first call on the new local replica {_s(local)} after the DNS update",
    )  # fmt: skip
    assert duplicates == 0
    assert load.failures() == [], load.failures()[:5]
    assert {c.replica for c in load.calls if c.started > settled + 0.5} == {"a2"}


async def test_dns_flap(dns_pods: Pods, capsys: pytest.CaptureFixture[str]) -> None:
    """Records alternate between two live replica sets, then the DNS server stops and starts."""
    pods = dns_pods
    for name, node, host in [("a2", "node-a", "127.0.0.180"), ("b3", "node-b", "127.0.0.181")]:
        await asyncio.to_thread(pods.start, name, node, host)
    sets = [("a1", "b1", "b2"), ("a2", "b3")]
    async with (
        GreeterClient(
            pods.dns_target, node="node-a", dns=FAST_DNS, **resilience_options()
        ) as client,
        load_on(client) as load,
    ):
        await load.wait_for(lambda c: c.replica == "a1", since=0)
        began = time.monotonic()
        for i in range(8):  # records flip every 0.4 s
            await asyncio.to_thread(pods.publish, *sets[i % 2])
            await asyncio.sleep(0.4)  # scenario: each record set stays 0.4 s
        for _ in range(2):  # the server goes away and comes back
            await asyncio.to_thread(pods.dns_server.stop)
            await asyncio.sleep(1.0)  # scenario: DNS down 1 s
            await asyncio.to_thread(pods.dns_server.start)
            await asyncio.sleep(0.3)  # scenario: DNS up 0.3 s
        final = time.monotonic()
        await asyncio.to_thread(pods.publish, *sets[1])
        ended = time.monotonic()
        await asyncio.sleep(1.5)  # scenario: load keeps running 1.5 s on the final set
    locals_seen = [c.replica for c in load.calls if c.ok and c.replica in {"a1", "a2"}]
    switches = sum(1 for x, y in itertools.pairwise(locals_seen) if x != y)
    on_final = load.first_success(final, lambda r: r == "a2")
    duplicates = report(
        capsys, "DNS flap (8 flips of 0.4 s, server down 1 s twice)", pods, load, (began, ended),
        on_final, f"; local replica switched {switches} times",
    )  # fmt: skip
    assert duplicates == 0
    assert load.failures() == [], load.failures()[:5]
    assert {c.replica for c in load.calls if c.started > ended + 1.0} == {"a2"}
