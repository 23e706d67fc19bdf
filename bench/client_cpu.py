"""The asyncio client's CPU per unary call over real HTTP/2, against plain grpc.aio.

    python -m bench.client_cpu                 # 40 rounds of 300 calls per variant
    python -m bench.client_cpu --rounds 80

End-to-end latency on a small shared machine moves 10-50% between runs;
CPU time spent by the calling thread moves far less. Here one process runs
both clients against one replica process (``demo.replica``), one call at a
time, in interleaved batches: plain grpc.aio (a raw multi-callable, the
baseline), then the generated ``GreeterClient`` (``localfirst``). Each batch
reads ``time.thread_time()`` of the event loop's thread before and after, so
what the replica, grpc's poller thread or other processes do is not counted.
The table gives, per variant, the median microseconds per call over rounds;
"extra" is the median over rounds of (localfirst - plain) in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc.aio

from bench.run import machine
from demo.cluster import REPO, ReplicaProcess

sys.path.insert(0, str(REPO / "generated"))

from greeter.v1 import greeter_localfirst, greeter_pb2


async def cpu_per_call(call: Callable[[], Awaitable[object]], calls: int) -> float:
    """Microseconds of this thread's CPU per call, ``calls`` calls one after another."""
    started = time.thread_time()
    for _ in range(calls):
        await call()
    return (time.thread_time() - started) / calls * 1e6


async def run(rounds: int, batch: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        replica = ReplicaProcess("bench-cpu", "node-bench", "127.0.0.89", REPO / "generated")
        replica.log_dir = Path(tmp)
        replica.start()
        try:
            channel = grpc.aio.insecure_channel(f"ipv4:{replica.address}")
            say = channel.unary_unary(
                "/greeter.v1.Greeter/SayHello",
                request_serializer=greeter_pb2.HelloRequest.SerializeToString,
                response_deserializer=greeter_pb2.HelloReply.FromString,
            )
            client = greeter_localfirst.GreeterClient(
                f"static:///{replica.static}", node="node-bench"
            )
            request = greeter_pb2.HelloRequest(name="bench")
            variants: dict[str, Callable[[], Awaitable[object]]] = {
                "plain grpc.aio": lambda: say(request, timeout=10),
                "localfirst": lambda: client.say_hello(request, timeout=10),
            }
            for variant in variants.values():  # warm up: connections, caches
                await cpu_per_call(variant, 500)
            results: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(rounds):
                for name, variant in variants.items():
                    results[name].append(await cpu_per_call(variant, batch))
            await client.close()
            await channel.close()
        finally:
            replica.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=300, help="calls per variant per round")
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.batch))
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    print("| variant | CPU us per call (median) | quartiles |")
    print("|---|---|---|")
    for name, samples in results.items():
        q1, _, q3 = statistics.quantiles(samples, n=4)
        print(f"| {name} | {statistics.median(samples):.1f} | {q1:.1f} - {q3:.1f} |")
    plain, ours = results["plain grpc.aio"], results["localfirst"]
    extra = [b - a for a, b in zip(plain, ours, strict=True)]
    ratio = [b / a for a, b in zip(plain, ours, strict=True)]
    print(
        f"\nlocalfirst - plain, same round: median {statistics.median(extra):.1f} us per call, "
        f"ratio {statistics.median(ratio):.3f}"
    )


if __name__ == "__main__":
    main()
