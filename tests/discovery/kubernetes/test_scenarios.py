"""Following pods through redeploys with ``kubernetes:///`` targets (EndpointSlice watch).

The API stand-in publishes EndpointSlices for real replica processes on
127.0.0.x (one slice per simulated node, a named port ``grpc`` as a Service
would have); the generated GreeterClient on node-a watches them with the real
kubernetes client. Every scenario runs under a steady stream of unary calls
and must not fail one of them; the switch times are printed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from greeter.v1.greeter_localfirst import GreeterClient

from demo.cluster import ReplicaProcess
from demo.load import Load
from protoc_gen_localfirst.runtime import KubernetesOptions
from tests.discovery.kubernetes.apiserver import ApiServer, endpoint, endpoint_slice
from tests.support.cluster import Pods

pytestmark = pytest.mark.integration

TARGET = "kubernetes:///greeter.default:grpc"


def publish_slices(api: ApiServer) -> Callable[[Pods, Sequence[str]], None]:
    """Publishing as EndpointSlices: exactly ``names`` (one slice per node); those in
    ``pods.terminating`` are marked so."""

    def publish(pods: Pods, names: Sequence[str]) -> None:
        by_node: dict[str, list[dict[str, Any]]] = {"node-a": [], "node-b": []}
        for name in names:
            replica = pods.running[name]
            dying = name in pods.terminating
            by_node[replica.node].append(
                endpoint(
                    replica.host,
                    replica.node,
                    zone="zone-1",
                    ready=not dying,
                    serving=True,
                    terminating=dying,
                    pod=name,
                )
            )
        for node, endpoints in by_node.items():
            api.apply_slice(
                endpoint_slice(
                    f"greeter-{node}",
                    "greeter",
                    endpoints,
                    ports=[{"name": "grpc", "port": pods.port, "protocol": "TCP"}],
                )
            )

    return publish


@pytest.fixture
def pods(api: ApiServer, tmp_path: Path) -> Iterator[Pods]:
    running = Pods(tmp_path, publish=publish_slices(api))
    try:
        running.start("a1", "node-a", "127.0.0.71")
        running.start("b1", "node-b", "127.0.0.72")
        running.start("b2", "node-b", "127.0.0.73")
        running.publish("a1", "b1", "b2")
        yield running
    finally:
        running.close()


@pytest.fixture
def kube_options(kubeconfig: Path) -> KubernetesOptions:
    return KubernetesOptions(kubeconfig=str(kubeconfig), reconnect_initial=0.1, reconnect_max=1.0)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n  [kubernetes] {text}")


async def test_rolling_redeploy_to_new_ips(
    pods: Pods, kube_options: KubernetesOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(TARGET, node="node-a", kubernetes=kube_options) as client,
        Load.steady(client) as load,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        for name, node, host in [
            ("a2", "node-a", "127.0.0.81"),
            ("b3", "node-b", "127.0.0.82"),
            ("b4", "node-b", "127.0.0.83"),
        ]:
            await asyncio.to_thread(pods.start, name, node, host)
        # The rollout: new pods become ready, old ones terminate, then leave the slices.
        pods.terminating.update({"a1", "b1", "b2"})
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a1", "b1", "b2", "a2", "b3", "b4")
        switch = await load.wait_for(lambda r: r.replica == "a2", since=published)
        for old in ("a1", "b1", "b2"):
            await asyncio.to_thread(pods.stop, old)  # SIGTERM: drain
        await asyncio.to_thread(pods.publish, "a2", "b3", "b4")
        settled = time.monotonic()
        await asyncio.sleep(1.0)  # scenario: 1 s of calls after the rollout, all on a2
    assert load.failures() == []
    late = {r.replica for r in load.replies_since(settled)}
    assert late == {"a2"}, late
    report(capsys, f"redeploy: slices updated -> first call on the new local replica: "
                   f"{switch * 1000:.0f} ms; {len(load.calls)} calls, 0 failed")  # fmt: skip


async def test_local_replica_terminating_then_replaced(
    pods: Pods, kube_options: KubernetesOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(TARGET, node="node-a", kubernetes=kube_options) as client,
        Load.steady(client) as load,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        pods.terminating.add("a1")
        marked = time.monotonic()
        await asyncio.to_thread(pods.publish, "a1", "b1", "b2")
        away = await load.wait_for(lambda r: r.node == "node-b", since=marked)
        await asyncio.sleep(
            1.0
        )  # scenario: a1 still runs and would answer; it must get no new calls
        late_a1 = [r for r in load.replies_since(marked + away + 0.2) if r.replica == "a1"]
        await asyncio.to_thread(pods.stop, "a1")
        await asyncio.to_thread(pods.publish, "b1", "b2")
        await asyncio.to_thread(pods.start, "a3", "node-a", "127.0.0.74")
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a3", "b1", "b2")
        back = await load.wait_for(lambda r: r.replica == "a3", since=published)
    assert load.failures() == []
    assert late_a1 == [], f"{len(late_a1)} calls went to the terminating local replica"
    report(capsys, f"local replica terminating: calls moved to node-b {away * 1000:.0f} ms after the "
                   f"slice said so; new local replica in the slice -> first call on it: "
                   f"{back * 1000:.0f} ms; 0 failed")  # fmt: skip


async def test_local_replica_crashes(
    pods: Pods, kube_options: KubernetesOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(TARGET, node="node-a", kubernetes=kube_options) as client,
        Load.steady(client, rpc="who_am_i") as load,
        Load.steady(client, workers=2) as writes,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        killed = time.monotonic()
        await asyncio.to_thread(pods.stop, "a1", signal.SIGKILL)
        failover = await load.wait_for(lambda r: r.node == "node-b", since=killed)
        await asyncio.sleep(0.3)  # scenario: the kubelet's readiness probe notices later
        pods.running["a1"] = ReplicaProcess("a1", "node-a", "127.0.0.71")
        pods.terminating.add("a1")
        await asyncio.to_thread(pods.publish, "a1", "b1", "b2")
        pods.running.pop("a1")
        await asyncio.to_thread(pods.publish, "b1", "b2")
        await asyncio.to_thread(pods.start, "a3", "node-a", "127.0.0.74")
        published = time.monotonic()
        await asyncio.to_thread(pods.publish, "a3", "b1", "b2")
        back = await load.wait_for(lambda r: r.replica == "a3", since=published)
    assert load.failures() == [], [
        c.details for c in load.failures()
    ]  # reads are retried elsewhere
    writes.assert_only_in_flight_calls_failed(kills=1)
    report(capsys, f"local replica SIGKILLed: first answer from node-b {failover * 1000:.0f} ms "
                   f"later; new local replica in the slice -> first call on it: "
                   f"{back * 1000:.0f} ms; 0 failed")  # fmt: skip


async def test_api_outage_keeps_calls_flowing(
    pods: Pods, api: ApiServer, kube_options: KubernetesOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        GreeterClient(TARGET, node="node-a", kubernetes=kube_options) as client,
        Load.steady(client) as load,
    ):
        await load.wait_for(lambda r: r.replica == "a1", since=0)
        api.set_down(True)
        await asyncio.sleep(1.5)  # scenario: the API server is away 1.5 s
        error_seen = client.source.last_error
        during = load.replies_since(time.monotonic() - 1.0)
        await asyncio.to_thread(pods.start, "a4", "node-a", "127.0.0.75")
        await asyncio.to_thread(pods.publish, "a4", "b1", "b2")  # made while the API is away
        api.set_down(False)
        back_up = time.monotonic()
        back = await load.wait_for(lambda r: r.replica == "a4", since=back_up)
    assert load.failures() == []
    assert error_seen is not None and "unreachable" in error_seen, error_seen
    assert during and {r.replica for r in during} == {"a1"}
    report(capsys, f"API down 1.5 s: {len(during)} calls answered meanwhile by the last known "
                   f"set, 0 failed; API back -> first call on the new local replica "
                   f"{back * 1000:.0f} ms later")  # fmt: skip
