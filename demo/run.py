"""Local-first in one minute: generate, start replicas on two nodes, call, kill, restart.

    python -m demo.run

1. Generates Python code from protos/greeter/v1/greeter.proto with protoc
   (grpc_tools) and this plugin, into .demo/gen.
2. Starts three replicas of the example Greeter as separate processes on
   loopback addresses, standing in for pods: one on node-a, two on node-b.
3. A client "on node-a" calls: every call lands on node-a's replica. The
   node-a replica is killed: calls fail over to node-b with no failed call.
   It is restarted: calls return to it. Everything down: the error says what
   was tried.

No root, no Kubernetes, no network beyond 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from demo.cluster import REPO, ReplicaProcess, static_target

OUT = REPO / ".demo"
GEN = OUT / "gen"
PROTO = "greeter/v1/greeter.proto"
CALLS = 12


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
        f"--plugin=protoc-gen-localfirst={plugin}", str(REPO / "protos" / PROTO),
    ]  # fmt: skip
    say(f"$ python -m grpc_tools.protoc -Iprotos --python_out=... --localfirst_out=.demo/gen {PROTO}")
    subprocess.run(command, check=True)
    written = sorted(p.relative_to(OUT) for p in GEN.rglob("*.py*"))
    say("  wrote " + ", ".join(str(p) for p in written))
    sys.path.insert(0, str(GEN))
    return importlib.import_module("greeter.v1.greeter_localfirst")


async def burst(client: Any, pb2: Any, label: str) -> collections.Counter[str]:
    """CALLS unary calls in a row; count who answered and how many failed."""
    answered: collections.Counter[str] = collections.Counter()
    for i in range(CALLS):
        try:
            reply = await client.say_hello(pb2.HelloRequest(name=f"call {i}"), timeout=2.0)
            answered[f"{reply.replica} ({reply.node})"] += 1
        except grpc.RpcError:
            answered["FAILED"] += 1
    summary = ", ".join(f"{who} x{n}" for who, n in answered.most_common())
    say(f"  {label}: {summary}")
    return answered


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="  client log: %(message)s")
    say("== 1. generate")
    module = generate()
    pb2 = importlib.import_module("greeter.v1.greeter_pb2")

    say("\n== 2. start replicas (processes on loopback addresses, one per simulated pod)")
    local = ReplicaProcess("greeter-a1", "node-a", "127.0.0.21", GEN)
    others = [
        ReplicaProcess("greeter-b1", "node-b", "127.0.0.22", GEN),
        ReplicaProcess("greeter-b2", "node-b", "127.0.0.23", GEN),
    ]
    replicas = [local, *others]
    failures = 0
    try:
        for replica in replicas:
            replica.start()
            say(f"  {replica.name} on {replica.node} at {replica.address}")
        target = static_target(replicas)
        say(f"\n== 3. client on node-a (NODE_NAME=node-a), target\n  {target}")
        async with module.GreeterClient(target, node="node-a") as client:
            failures += (await burst(client, pb2, "local first"))["FAILED"]
            replies = [r.replica async for r in client.lots_of_replies(pb2.HelloRequest(name="s", count=3))]
            say(f"  a server stream of 3 replies came from: {', '.join(replies)}")

            say(f"\n== 4. kill {local.name} (SIGKILL, like a crashed pod)")
            local.kill()
            failures += (await burst(client, pb2, "failover"))["FAILED"]

            say(f"\n== 5. restart {local.name} at the same address")
            started = time.monotonic()
            local.start()
            ready = time.monotonic()
            calls_until_back = 0
            while True:
                calls_until_back += 1
                reply = await client.say_hello(pb2.HelloRequest(name="back?"), timeout=2.0)
                if reply.node == "node-a":
                    break
                await asyncio.sleep(0.05)
            say(f"  process up and SERVING after {ready - started:.1f} s; the next call "
                f"went to {reply.replica} ({calls_until_back} call(s) until it was back)")  # fmt: skip
            failures += (await burst(client, pb2, "after restart"))["FAILED"]

            say("\n== 6. stop every replica: the error names what was tried")
            for replica in replicas:
                replica.kill()
            try:
                await client.say_hello(pb2.HelloRequest(name="anyone?"), timeout=2.0)
            except grpc.RpcError as error:
                say(f"  {error.code().name}: {error.details()}")
    finally:
        for replica in replicas:
            replica.stop()
    say(f"\nfailed calls while replicas were up: {failures}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
