"""Following pods through redeploys with ``dns://`` targets and a real DNS server.

dnsmasq (Debian's, on a loopback port) answers for ``greeter.test``; replicas
are real processes on 127.0.0.x, all on the same port as pods of a headless
Service are. The client learns each new address's node from the server
(health probe, response headers). Every scenario runs under a steady stream
of unary calls and must not fail one of them; the switch times are printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from greeter.v1.greeter_localfirst import GreeterClient

from demo.load import Load
from protoc_gen_localfirst.runtime import DnsOptions
from tests.support.cluster import Pods
from tests.support.dnsmasq import Dnsmasq
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

NAME = "greeter.test"
FAST_DNS = DnsOptions(min_interval=0.2, max_interval=5.0, failure_refresh_interval=0.2, timeout=0.5)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    with Dnsmasq({}, ttl=1) as dns_server:
        running = Pods(tmp_path, dns=dns_server, name=NAME)
        try:
            running.start("a1", "node-a", "127.0.0.51")
            running.start("b1", "node-b", "127.0.0.52")
            running.start("b2", "node-b", "127.0.0.53")
            running.publish("a1", "b1", "b2")
            yield running
        finally:
            running.close()


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n  [dns] {text}")


async def test_rolling_redeploy_to_new_ips(pods: Pods, capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        GreeterClient(pods.dns_target, node="node-a", dns=FAST_DNS) as client,
        Load.steady(client) as load,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        for name, node, host in [
            ("a2", "node-a", "127.0.0.61"),
            ("b3", "node-b", "127.0.0.62"),
            ("b4", "node-b", "127.0.0.63"),
        ]:
            await asyncio.to_thread(pods.start, name, node, host)
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a2", "b3", "b4")
        switch = await load.wait_for(lambda r: r.replica == "a2", since=published)
        for old in ("a1", "b1", "b2"):
            await asyncio.to_thread(pods.stop, old)  # SIGTERM: drain, like a rollout
        settled = time.monotonic()
        await asyncio.sleep(1.0)  # scenario: 1 s of calls after the rollout, all on a2
    assert load.failures() == []
    late = {r.replica for r in load.replies_since(settled)}
    assert late == {"a2"}, late
    report(capsys, f"redeploy: new DNS answer -> first call on the new local replica: {switch:.2f} s; "
                   f"{len(load.calls)} calls, 0 failed")  # fmt: skip


async def test_local_replica_killed_then_replaced(
    pods: Pods, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(pods.dns_target, node="node-a", dns=FAST_DNS) as client,
        Load.steady(client, rpc="who_am_i") as load,
        Load.steady(client, workers=2) as writes,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        killed = time.monotonic()
        await asyncio.to_thread(pods.stop, "a1", signal.SIGKILL)
        failover = await load.wait_for(lambda r: r.node == "node-b", since=killed)
        await asyncio.to_thread(pods.publish, "b1", "b2")  # endpoints controller drops it
        # The client's view follows DNS: a1 leaves its endpoints, node-b's two stay.
        node_b = {pods.running[n].address for n in ("b1", "b2")}
        await wait_until_async(
            lambda: {e.address for e in client.endpoint_order()} == node_b,
            what=f"the client's endpoints to become b1 and b2 ({sorted(node_b)})",
        )
        # Calls made from now on are answered by node-b's replicas, every one of them.
        # (A reply cannot come from the dead a1: what fails here is the client not
        # answering, answering with errors, or keeping a node-a endpoint.)
        dropped = time.monotonic()
        await load.wait_for(lambda r: r.ok and r.started >= dropped, since=dropped)
        await asyncio.sleep(0.3)  # scenario: 0.3 s of calls on node-b alone
        after = [c for c in load.calls if c.started >= dropped]
        answered = {c.replica for c in after if c.ok}
        assert after and all(c.ok for c in after), [c.details for c in after if not c.ok][:3]
        assert {c.node for c in after} == {"node-b"}, after[:3]
        assert answered <= {"b1", "b2"} and answered, answered
        assert {e.node for e in client.endpoint_order()} == {"node-b"}
        await asyncio.to_thread(pods.start, "a3", "node-a", "127.0.0.54")
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a3", "b1", "b2")
        back = await load.wait_for(lambda r: r.replica == "a3", since=published)
    assert load.failures() == []  # reads (no side effects) are retried elsewhere
    writes.assert_only_in_flight_calls_failed(kills=1)
    report(capsys, f"kill local: first answer from node-b {failover:.3f} s after SIGKILL; "
                   f"new local replica in DNS -> first call on it: {back:.2f} s; 0 reads failed, "
                   f"{len(writes.failures())} non-idempotent writes in flight at the kill failed")  # fmt: skip


async def test_dns_server_down_keeps_last_known_endpoints(
    pods: Pods, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(pods.dns_target, node="node-a", dns=FAST_DNS) as client,
        Load.steady(client) as load,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        pods.dns_server.stop()
        await asyncio.sleep(3.0)  # scenario: DNS down for three TTLs, refreshes fail
        error_seen = client.source.last_error
        during = load.replies_since(time.monotonic() - 2.5)
        await asyncio.to_thread(pods.start, "a4", "node-a", "127.0.0.55")
        await asyncio.to_thread(pods.dns_server.start)
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a4", "b1", "b2")
        await asyncio.to_thread(pods.stop, "a1")
        back = await load.wait_for(lambda r: r.replica == "a4", since=published)
    assert load.failures() == []
    assert error_seen is not None and pods.dns_server.server in error_seen, error_seen
    assert during and {r.replica for r in during} == {"a1"}
    assert client.source.last_error is None
    report(capsys, f"DNS down 3 s: {len(during)} calls answered meanwhile, 0 failed "
                   f"(last_error: {error_seen}); after recovery, new local replica used "
                   f"{back:.2f} s after it was published")  # fmt: skip


async def test_never_resolvable_name_fails_with_the_dns_error(pods: Pods) -> None:
    target = pods.dns_server.target("missing.test", pods.port)
    async with GreeterClient(target, node="node-a", dns=FAST_DNS) as client:
        from greeter.v1.greeter_pb2 import HelloRequest

        from protoc_gen_localfirst.runtime import CallFailedError

        with pytest.raises(CallFailedError) as failure:
            await client.say_hello(HelloRequest(name="x"), timeout=2)
    details = failure.value.details() or ""
    assert f"no endpoints resolved yet for {target}" in details or "no ready endpoints" in details
    assert "NXDOMAIN" in details, details


def test_endpoints_command_shows_learned_nodes_and_order(pods: Pods) -> None:
    """The diagnostic resolves like a client: DNS for addresses, health probes for nodes."""
    env = {**os.environ, "NODE_NAME": "node-b"}
    result = subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst", "endpoints", pods.dns_target],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"target  {pods.dns_target}  (DnsSource)"
    port = pods.port
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  127.")}
    # address, node, zone, ready, then the load each replica reported to a health check
    assert rows[f"127.0.0.51:{port}"][:5] == [f"127.0.0.51:{port}", "node-a", "-", "yes", "0"]
    order = lines[lines.index("a call from node-b tries, in order:") + 1 :]
    assert len(order) == 3
    assert {o.split(" ")[3] for o in order[:2]} == {f"127.0.0.52:{port}", f"127.0.0.53:{port}"}
    assert order[0].endswith("same node") and order[1].endswith("same node")
    assert order[2] == f"  3. 127.0.0.51:{port} (node-a)  elsewhere"
