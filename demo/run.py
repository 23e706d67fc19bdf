"""Local-first in one minute: generate, start replicas on two nodes, call, kill, redeploy.

    python -m demo.run

1. Generates Python code from protos/greeter/v1/greeter.proto with protoc
   (grpc_tools) and this plugin, into .demo/gen.
2. Starts three replicas of the example Greeter as separate processes on
   loopback addresses, standing in for pods: one on node-a, two on node-b,
   published under one DNS name like a headless Service.
3. A client "on node-a" resolves the name, learns each replica's node from the
   replica itself, and calls: every call lands on node-a's replica.
4. The node-a replica is killed: calls fail over to node-b, none fails.
5. It restarts at the same address: calls return to it.
6. Every replica is redeployed to new addresses and DNS is updated: the client
   re-resolves and follows, with no failed call.
7. More load than the local replica can take (open loop, 1.5x its capacity,
   with admission control): it keeps what it can serve, the excess spills to
   node-b, no call fails; strict local-first for contrast.
8. Everything down: the error says what was tried.

No root, no Kubernetes, no network beyond 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from demo.cluster import REPO, ReplicaProcess, free_port, static_target
from demo.dns_server import DemoDnsServer
from demo.load import Load, OpenLoad
from protoc_gen_localfirst.runtime import STRICT_LOCALITY, DnsOptions

OUT = REPO / ".demo"
GEN = OUT / "gen"
PROTO = "greeter/v1/greeter.proto"
OPTIONS_PROTO = "localfirst/options.proto"
NAME = "greeter.demo"
CALLS = 12
BUSY_CAPACITY, BUSY_WORK_MS, BUSY_ADMISSION = 4, 20, 6
BUSY_REPLICA = ["--capacity", str(BUSY_CAPACITY), "--work-ms", str(BUSY_WORK_MS),
                "--admission", str(BUSY_ADMISSION)]  # fmt: skip
BUSY_RATE, BUSY_SECONDS, STRICT_SECONDS = 300.0, 4.0, 2.0


def say(text: str = "") -> None:
    print(text, flush=True)


def generate() -> Any:
    """Run protoc with this plugin; return the generated module."""
    shutil.rmtree(GEN, ignore_errors=True)
    GEN.mkdir(parents=True)
    plugin = Path(sys.executable).parent / "protoc-gen-localfirst"
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'protos'}",
        f"--python_out={GEN}", f"--pyi_out={GEN}", f"--localfirst_out={GEN}",
        f"--plugin=protoc-gen-localfirst={plugin}", str(REPO / "protos" / OPTIONS_PROTO),
        str(REPO / "protos" / PROTO),
    ]  # fmt: skip
    # greeter.proto imports localfirst/options.proto (its call policies), so its
    # _pb2 imports localfirst.options_pb2: generate that too.
    say(
        "$ python -m grpc_tools.protoc -Iprotos --python_out=... --localfirst_out=.demo/gen"
        f" {OPTIONS_PROTO} {PROTO}"
    )
    subprocess.run(command, check=True)
    written = sorted(p.relative_to(OUT) for p in GEN.rglob("*.py*"))
    say("  wrote " + ", ".join(str(p) for p in written))
    sys.path.insert(0, str(GEN))
    return importlib.import_module("greeter.v1.greeter_localfirst")


def who(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in counts.most_common())


async def burst(client: Any, pb2: Any, label: str) -> int:
    """CALLS unary calls in a row; print who answered; return how many failed."""
    answered: collections.Counter[str] = collections.Counter()
    for i in range(CALLS):
        try:
            reply = await client.say_hello(pb2.HelloRequest(name=f"call {i}"), timeout=2.0)
            answered[f"{reply.replica} ({reply.node})"] += 1
        except grpc.RpcError:
            answered["FAILED"] += 1
    say(f"  {label}: {who(answered)}")
    return answered["FAILED"]


def show_order(client: Any) -> None:
    order = client.endpoint_order()
    say("  call order from node-a: " + ", ".join(e.describe() for e in order))


async def wait_for_nodes(client: Any, count: int) -> None:
    """Until the client has learned the node of ``count`` endpoints (health probes)."""
    for _ in range(100):
        if sum(e.node is not None for e in client.balancer.endpoints) >= count:
            return
        await asyncio.sleep(0.05)


class Cluster:
    """Replica processes on one port, published in the demo DNS server."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self.dns = DemoDnsServer({}, ttl=1)
        self.replicas: dict[str, ReplicaProcess] = {}

    def start(
        self, name: str, node: str, host: str, extra_args: Sequence[str] = ()
    ) -> ReplicaProcess:
        replica = ReplicaProcess(
            name, node, host, GEN, port=self.port, extra_args=extra_args, log_dir=OUT
        )
        self.replicas[name] = replica.start(wait=False)
        return replica

    def wait(self, names: Sequence[str]) -> None:
        for name in names:
            self.replicas[name].wait_serving()
            replica = self.replicas[name]
            say(f"  {name} on {replica.node} at {replica.address}")

    def publish(self, names: Sequence[str]) -> None:
        hosts = [self.replicas[n].host for n in names]
        self.dns.set(NAME, hosts)
        say(f"  DNS: {NAME} -> {', '.join(hosts)} (TTL {self.dns.ttl} s)")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.replicas.pop(name).kill(sig)

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.stop()
        self.dns.close()


class Repeats(logging.Filter):
    """Lets the first of identical log messages through and counts the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            self.hidden += 1
            return False
        self.seen.add(message)
        return True


async def open_load(client: Any, pb2: Any, seconds: float) -> tuple[OpenLoad, dict[str, int]]:
    """Warm up (connections, a load report from each replica), then BUSY_RATE calls/s
    for ``seconds``; the load and the spills by reason during it."""
    for i in range(20):
        await client.say_hello(pb2.HelloRequest(name=f"warm-up {i}"), timeout=2.0)
    before = client.stats.as_dict()
    load = await OpenLoad(client, BUSY_RATE, seconds).run()
    after = client.stats.as_dict()
    spills = {k.removeprefix("spills_"): after[k] - before[k] for k in after if "spills_" in k}
    return load, spills


async def busy_local_replica(module: Any, pb2: Any, cluster: Cluster) -> int:
    """Step 7: open-loop load from node-a above the local replica's capacity."""
    say("\n== 7. more load than the local replica can take: it keeps what it can serve")
    replicas = [("a3", "node-a", "127.0.0.27"), ("b5", "node-b", "127.0.0.28"),
                ("b6", "node-b", "127.0.0.29")]  # fmt: skip
    for name, node, host in replicas:
        cluster.start(name, node, host, BUSY_REPLICA)
    await asyncio.to_thread(cluster.wait, [name for name, _, _ in replicas])
    say(f"  each works on {BUSY_CAPACITY} calls at once, {BUSY_WORK_MS} ms each (at most"
        f" {BUSY_CAPACITY * 1000 // BUSY_WORK_MS} calls/s), and refuses calls over"
        f" {BUSY_ADMISSION} in flight (serve(admission={BUSY_ADMISSION}))")  # fmt: skip
    target = static_target([cluster.replicas[name] for name, _, _ in replicas])
    say(f"  a second client on node-a, target {target}")
    repeats = Repeats()
    handler = logging.getLogger().handlers[0]
    handler.addFilter(repeats)
    try:
        async with module.GreeterClient(target, node="node-a") as client:
            load, spills = await open_load(client, pb2, BUSY_SECONDS)
        async with module.GreeterClient(target, node="node-a", locality=STRICT_LOCALITY) as client:
            strict, strict_spills = await open_load(client, pb2, STRICT_SECONDS)
    finally:
        handler.removeFilter(repeats)
    if repeats.hidden:
        say(f"  ({repeats.hidden} repeated client log lines not shown)")
    say(f"  {load.scheduled} SayHello calls in {BUSY_SECONDS:g} s, open loop at {BUSY_RATE:g}/s"
        f" (1.5x one replica), 1 s deadline: {len(load.failures())} failed")  # fmt: skip
    say(
        f"  answered by node-a's replica a3: {load.share('node-a'):.0%}; spills to node-b: "
        + ", ".join(f"{reason} x{n}" for reason, n in spills.items())
    )
    say(
        f"  load generator: {load.scheduled / load.elapsed:.0f} calls/s started,"
        f" {load.late_starts + strict.late_starts} late start(s) (> 10 ms behind schedule)"
    )
    say(f"  strict local-first (locality=STRICT_LOCALITY), same load for {STRICT_SECONDS:g} s:"
        f" every call goes to a3 first; {strict_spills['refused']} refused there went on to"
        f" node-b (admission control), {len(strict.failures())} failed; without admission"
        " control they would queue at a3 and miss their deadline")  # fmt: skip
    return len(load.failures())


async def main() -> int:
    logging.basicConfig(
        level=logging.WARNING, format="  client log: %(message)s", stream=sys.stdout
    )
    say("== 1. generate")
    module = generate()
    pb2 = importlib.import_module("greeter.v1.greeter_pb2")

    say("\n== 2. start replicas (processes on loopback addresses, one per simulated pod)")
    cluster = Cluster()
    failures = 0
    try:
        for name, node, host in [
            ("a1", "node-a", "127.0.0.21"),
            ("b1", "node-b", "127.0.0.22"),
            ("b2", "node-b", "127.0.0.23"),
        ]:
            cluster.start(name, node, host)
        cluster.wait(["a1", "b1", "b2"])
        cluster.publish(["a1", "b1", "b2"])
        target = cluster.dns.target(NAME, cluster.port)
        say(f"\n== 3. client on node-a (NODE_NAME=node-a), target {target}")
        dns = DnsOptions(min_interval=0.2, failure_refresh_interval=0.2)
        async with module.GreeterClient(target, node="node-a", dns=dns) as client:
            await wait_for_nodes(client, 3)
            say("  DNS gave addresses; each replica's health check named its node")
            show_order(client)
            failures += await burst(client, pb2, "local first")
            replies = [
                r.replica async for r in client.lots_of_replies(pb2.HelloRequest(name="s", count=3))
            ]
            say(f"  a server stream of 3 replies came from: {', '.join(replies)}")

            say("\n== 4. kill a1 (SIGKILL, like a crashed pod)")
            cluster.kill("a1")
            failures += await burst(client, pb2, "failover")

            say("\n== 5. restart a1 at the same address")
            started = time.monotonic()
            cluster.start("a1", "node-a", "127.0.0.21").wait_serving()
            ready = time.monotonic()
            for calls_until_back in range(1, 200):
                reply = await client.say_hello(pb2.HelloRequest(name="back?"), timeout=2.0)
                if reply.node == "node-a":
                    break
                await asyncio.sleep(0.05)
            say(f"  process up and SERVING after {ready - started:.1f} s; the next call "
                f"went to {reply.replica} ({calls_until_back} call(s) until it was back)")  # fmt: skip
            failures += await burst(client, pb2, "after restart")

            say("\n== 6. redeploy every replica to new addresses, under steady load")
            async with Load.steady(client) as load:
                for name, node, host in [
                    ("a2", "node-a", "127.0.0.24"),
                    ("b3", "node-b", "127.0.0.25"),
                    ("b4", "node-b", "127.0.0.26"),
                ]:
                    cluster.start(name, node, host)
                await asyncio.to_thread(cluster.wait, ["a2", "b3", "b4"])
                published = time.monotonic()
                cluster.publish(["a2", "b3", "b4"])
                switch = await load.wait_for(lambda c: c.replica == "a2", since=published)
                for old in ("a1", "b1", "b2"):
                    await asyncio.to_thread(cluster.kill, old, signal.SIGTERM)
                settled = time.monotonic()
                await asyncio.sleep(0.5)
            after = collections.Counter(
                f"{r.replica} ({r.node})" for r in load.replies_since(settled)
            )
            say(f"  first call on the new local replica {switch:.2f} s after the DNS update")
            say(f"  {len(load.calls)} calls during the redeploy, {len(load.failures())} failed; "
                f"after the old replicas stopped: {who(after)}")  # fmt: skip
            failures += len(load.failures())
            show_order(client)

            failures += await busy_local_replica(module, pb2, cluster)

            say("\n== 8. stop every replica: the call keeps trying until its deadline (nothing")
            say("   was sent: connections refused), then the error names what was tried")
            for name in list(cluster.replicas):
                cluster.kill(name)
            try:
                await client.say_hello(pb2.HelloRequest(name="anyone?"), timeout=2.0)
            except grpc.RpcError as error:
                say(f"  {error.code().name}: {error.details()}")
    finally:
        cluster.close()
    say(f"\nfailed calls while replicas were up: {failures}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
