"""The asyncio client's CPU per unary call: this working tree against a git commit.

    python -m bench.client_ab HEAD              # 40 rounds of 300 calls per variant
    python -m bench.client_ab 384058d --rounds 60
    python -m bench.client_ab HEAD --concurrency 32

For changes to the call path worth a few microseconds, which
``bench.client_cpu`` cannot tell apart between two runs (the machine's
speed drifts by more between runs than the change). Here both versions run
in one process against one replica, interleaved with plain grpc.aio: the
commit's ``protoc_gen_localfirst`` is extracted with ``git archive`` into a
temporary directory under another package name (``lf_before``), so the two
runtimes load side by side. Each version calls ``SayHello`` through its own
``AsyncClient._unary_unary``, as the generated method does. The result is
the median over rounds of (this tree - the commit) within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc.aio

from bench.client_cpu import interleaved
from bench.run import plain_unary
from bench.stats import describe, machine
from demo.cluster import REPO, ReplicaProcess

sys.path.insert(0, str(REPO / "generated"))

from greeter.v1 import greeter_localfirst, greeter_pb2

BEFORE = "lf_before"


def load_runtime(commit: str, into: Path) -> Any:
    """``commit``'s runtime package, importable as ``lf_before.runtime``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "protoc_gen_localfirst"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "protoc_gen_localfirst").rename(into / BEFORE)
    for source in (into / BEFORE).rglob("*.py"):
        source.write_text(source.read_text().replace("protoc_gen_localfirst", BEFORE))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{BEFORE}.runtime")


def client_of(runtime: Any, target: str) -> Any:
    """A client of ``runtime`` whose ``say_hello`` does what the generated one does."""
    info = runtime.MethodInfo(
        service="greeter.v1.Greeter",
        name="SayHello",
        kind=runtime.MethodKind.UNARY_UNARY,
        request_type=greeter_pb2.HelloRequest,
        response_type=greeter_pb2.HelloReply,
        policy=runtime.MethodPolicy(max_backoff=0.5),
    )

    class Client(runtime.AsyncClient):  # type: ignore[misc,name-defined]
        async def say_hello(self, request: Any, *, timeout: float | None = None) -> Any:
            return await self._unary_unary(
                info, request, timeout=timeout, metadata=None, retry=None
            )

    return Client(target, node="node-bench")


async def run(commit: str, rounds: int, concurrency: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        before = load_runtime(commit, Path(tmp))
        replica = ReplicaProcess(
            "bench-ab", "node-bench", "127.0.0.89", REPO / "generated", log_dir=Path(tmp),
            extra_args=["--max-concurrent-streams", "256"],
        )  # fmt: skip
        replica.start()
        try:
            channel = grpc.aio.insecure_channel(f"ipv4:{replica.address}")
            target = f"static:///{replica.static}"
            this_tree = greeter_localfirst.GreeterClient(target, node="node-bench")
            old = client_of(before, target)
            request = greeter_pb2.HelloRequest(name="bench")
            variants = {
                "plain grpc.aio": plain_unary(channel),
                commit: lambda: old.say_hello(request, timeout=10),
                "this tree": lambda: this_tree.say_hello(request, timeout=10),
            }
            batch = 300 if concurrency == 1 else 2000
            results = await interleaved(variants, rounds, batch, concurrency)
            await this_tree.close()
            await old.close()
            await channel.close()
        finally:
            replica.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="what to compare this tree with (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    results = asyncio.run(run(args.commit, args.rounds, args.concurrency))
    print("machine: " + describe(machine()))
    baseline = results["plain grpc.aio"]
    print("| variant | CPU us per call (median) | extra over plain grpc.aio |")
    print("|---|---|---|")
    for name, samples in results.items():
        extra = statistics.median(b - a for a, b in zip(baseline, samples, strict=True))
        print(f"| {name} | {statistics.median(samples):.1f} | {extra:+.1f} |")
    pairs = list(zip(results[args.commit], results["this tree"], strict=True))
    differences = [new - old for old, new in pairs]
    low, _, high = statistics.quantiles(differences, n=4)
    print(
        f"\nthis tree - {args.commit}, same round: {statistics.median(differences):+.1f} us "
        f"per call (quartiles {low:+.1f} .. {high:+.1f})"
    )


if __name__ == "__main__":
    main()
