"""The clients' CPU per unary call over real HTTP/2, against plain grpc.

    python -m bench.client_cpu                 # 40 rounds of 300 calls per variant
    python -m bench.client_cpu --rounds 80
    python -m bench.client_cpu --concurrency 32 --batch 2000   # asyncio calls 32 at a time

End-to-end latency on a small shared machine moves 10-50% between runs; the
CPU time a client process spends per call moves far less. Here one process
runs every client against one replica process (``demo.replica``), one call
at a time, in interleaved batches: plain grpc.aio (a raw multi-callable, the
baseline) and the generated ``GreeterClient``; plain grpc's blocking
multi-callable and the generated ``GreeterSyncClient``. Each batch reads
``time.process_time()`` (every thread of this process: grpc's own threads
too, not the replica's) before and after. The table gives the median
microseconds per call over rounds, and each client's extra CPU over its
baseline, the median over rounds of the difference within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.stats import describe, machine, round_order
from demo.cluster import REPO, ReplicaProcess

sys.path.insert(0, str(REPO / "generated"))

from greeter.v1 import greeter_localfirst, greeter_pb2


async def cpu_per_call(call: Callable[[], object], calls: int, concurrency: int = 1) -> float:
    """Microseconds of this process's CPU per call, ``calls`` calls from ``concurrency``
    workers (asyncio calls; blocking ones run one after another)."""
    started = time.process_time()
    result = call()
    if not inspect.isawaitable(result):
        for _ in range(calls - 1):
            call()
        return (time.process_time() - started) / calls * 1e6
    await result
    remaining = calls - 1

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()  # type: ignore[misc]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def interleaved(
    variants: Mapping[str, Callable[[], object]], rounds: int, batch: int, concurrency: int
) -> dict[str, list[float]]:
    """``cpu_per_call`` of every variant, ``batch`` calls per round, the variants
    interleaved (``round_order``), after a warm-up of each."""
    for variant in variants.values():  # warm up: connections, caches
        await cpu_per_call(variant, 500)
    results: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(rounds):
        for name, variant in round_order(variants, index):
            results[name].append(await cpu_per_call(variant, batch, concurrency))
    return results


async def run(rounds: int, batch: int, concurrency: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        # Streams per connection above any concurrency measured (plain grpc does not
        # retry streams the server refuses).
        replica = ReplicaProcess(
            "bench-cpu", "node-bench", "127.0.0.89", REPO / "generated", log_dir=Path(tmp),
            extra_args=["--max-concurrent-streams", "256"],
        )  # fmt: skip
        replica.start()
        target = f"static:///{replica.static}"
        paths: dict[str, Any] = {
            "request_serializer": greeter_pb2.HelloRequest.SerializeToString,
            "response_deserializer": greeter_pb2.HelloReply.FromString,
        }
        try:
            aio_channel = grpc.aio.insecure_channel(f"ipv4:{replica.address}")
            aio_say = aio_channel.unary_unary("/greeter.v1.Greeter/SayHello", **paths)
            channel = grpc.insecure_channel(f"ipv4:{replica.address}")
            say = channel.unary_unary("/greeter.v1.Greeter/SayHello", **paths)
            client = greeter_localfirst.GreeterClient(target, node="node-bench")
            sync_client = greeter_localfirst.GreeterSyncClient(target, node="node-bench")
            request = greeter_pb2.HelloRequest(name="bench")
            variants: dict[str, Callable[[], object]] = {
                ASYNC_BASELINE: lambda: aio_say(request, timeout=10),
                "localfirst asyncio": lambda: client.say_hello(request, timeout=10),
                SYNC_BASELINE: lambda: say(request, timeout=10),
                "localfirst blocking": lambda: sync_client.say_hello(request, timeout=10),
            }
            results = await interleaved(variants, rounds, batch, concurrency)
            await client.close()
            sync_client.close()
            await aio_channel.close()
            channel.close()
        finally:
            replica.stop()
    return results


ASYNC_BASELINE = "plain grpc.aio"
SYNC_BASELINE = "plain grpc (blocking)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=300, help="calls per variant per round")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="asyncio calls in flight (blocking: 1)"
    )
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.batch, args.concurrency))
    print("machine: " + describe(machine()))
    print("| variant | CPU us per call (median) | quartiles |")
    print("|---|---|---|")
    for name, samples in results.items():
        q1, _, q3 = statistics.quantiles(samples, n=4)
        print(f"| {name} | {statistics.median(samples):.1f} | {q1:.1f} - {q3:.1f} |")
    for baseline, ours in (
        (ASYNC_BASELINE, "localfirst asyncio"),
        (SYNC_BASELINE, "localfirst blocking"),
    ):
        pairs = list(zip(results[baseline], results[ours], strict=True))
        extra = statistics.median(b - a for a, b in pairs)
        ratio = statistics.median(b / a for a, b in pairs)
        print(f"\n{ours} - {baseline}, same round: {extra:.1f} us per call, ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
