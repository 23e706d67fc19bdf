"""Client and transport benchmarks against one replica process on loopback.

    python -m bench.run            # full run (a few minutes)
    python -m bench.run --quick    # fewer calls, for a smoke check
    python -m bench.run --h2-only  # plain grpc.aio vs localfirst over HTTP/2 only (client overhead)

Every variant calls the same replica process (demo.replica on the committed
generated code), in the same run, interleaved over ``--repeats`` rounds; the
table reports the median over rounds and the ratio to the baseline, plain
grpc.aio over HTTP/2 with no localfirst code in the call path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.stats import Latency, abba_round, machine, round_order
from demo.cluster import REPO, ReplicaProcess
from tests.support.certs import TlsFiles, make_tls_files

GENERATED = REPO / "generated"
sys.path.insert(0, str(GENERATED))

from greeter.v1 import greeter_localfirst, greeter_pb2

Variant = Callable[[], Awaitable[object]]
BASELINE = "grpcio h2 (baseline)"
CONTROL = "grpcio h2 (control)"


def pin_cpus(replicas: list[ReplicaProcess]) -> None:
    """The replicas on the last CPU, this process (the clients) on the others: client
    and server no longer take CPU from each other, as pods with their own cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    for pid, allowed in [(r.process.pid, {cpus[-1]}) for r in replicas if r.process] + [
        (os.getpid(), set(cpus[:-1]))
    ]:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(thread), allowed)


@contextlib.contextmanager
def busy_loop() -> Iterator[None]:
    """One CPU-bound process beside the benchmark, as on a busy node."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def plain_unary(channel: grpc.aio.Channel) -> Variant:
    say = channel.unary_unary(
        "/greeter.v1.Greeter/SayHello",
        request_serializer=greeter_pb2.HelloRequest.SerializeToString,
        response_deserializer=greeter_pb2.HelloReply.FromString,
    )
    request = greeter_pb2.HelloRequest(name="bench")
    return lambda: say(request, timeout=10)


def localfirst_unary(client: Any) -> Variant:
    request = greeter_pb2.HelloRequest(name="bench")
    return lambda: client.say_hello(request, timeout=10)


async def stream_mb_per_s(open_stream: Callable[[], Any], total_bytes: int) -> float:
    started = time.perf_counter()
    received = 0
    async for reply in open_stream():
        received += len(reply.message)
    elapsed = time.perf_counter() - started
    assert received >= total_bytes * 0.99, (received, total_bytes)
    return received / elapsed / 1e6


def h3_replica(name: str, host: str, library: str, tls: TlsFiles, tmp: Path) -> ReplicaProcess:
    """HTTP/3 (and HTTP/2, both over TLS) on ``library``."""
    return ReplicaProcess(
        name, "node-bench", host, GENERATED, log_dir=tmp, ca_file=tls.ca,
        extra_args=["--http3", "--certfile", str(tls.cert), "--keyfile", str(tls.key),
                    "--quic-library", library, "--max-concurrent-streams", "128"],
    )  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # One replica serves plaintext HTTP/2 (grpc.aio), as most in-cluster gRPC
        # runs; two serve HTTP/3 (always TLS), on qh3 and on aioquic, to compare
        # the two QUIC stacks under one client.
        tls = make_tls_files(tmp / "tls")
        ca = str(tls.ca)
        # Streams per connection above the highest concurrency measured, on every
        # replica: the clients (one connection each) must not wait for or be refused
        # streams (REFUSED_STREAM) while the baseline is not.
        h2_replica = ReplicaProcess(
            "bench-h2", "node-bench", "127.0.0.89", GENERATED, log_dir=tmp,
            extra_args=["--max-concurrent-streams", "128"],
        )  # fmt: skip
        replicas = [h2_replica]
        if not args.h2_only:
            qh3_replica = h3_replica("bench-qh3", "127.0.0.90", "qh3", tls, tmp)
            aioquic_replica = h3_replica("bench-aioquic", "127.0.0.91", "aioquic", tls, tmp)
            replicas += [qh3_replica, aioquic_replica]
        results: dict[str, Any] = {"machine": machine(), "unary": {}, "stream": {}}
        try:
            for replica in replicas:
                replica.start(wait=False)
            for replica in replicas:
                replica.wait_serving()
            if args.pin:
                pin_cpus(replicas)
            plain_channel = grpc.aio.insecure_channel(f"ipv4:{h2_replica.address}")
            clients = {
                "localfirst h2": greeter_localfirst.GreeterClient(
                    f"static:///{h2_replica.static}", node="node-bench"
                ),
            }
            if not args.h2_only:
                clients["localfirst h3 (qh3 server)"] = greeter_localfirst.GreeterClient(
                    f"static:///{qh3_replica.static}", node="node-bench", transport="h3", ca_file=ca
                )
                clients["localfirst h3 (aioquic server)"] = greeter_localfirst.GreeterClient(
                    f"static:///{aioquic_replica.static}",
                    node="node-bench",
                    transport="h3",
                    ca_file=ca,
                )
            variants: dict[str, Variant] = {BASELINE: plain_unary(plain_channel)}
            control_channel = None
            if args.control:
                # The baseline's client again, on a connection of its own: how far a
                # ratio moves when nothing differs (the noise floor of the ratios).
                control_channel = grpc.aio.insecure_channel(
                    f"ipv4:{h2_replica.address}", options=[("grpc.use_local_subchannel_pool", 1)]
                )
                variants[CONTROL] = plain_unary(control_channel)
            variants.update({name: localfirst_unary(c) for name, c in clients.items()})
            calls = {
                1: 500 if args.quick else 3000,
                32: 2000 if args.quick else 12000,
                64: 4000 if args.quick else 24000,
            }
            for concurrency, count in calls.items():
                rounds: dict[str, list[Latency]] = {name: [] for name in variants}
                for index in range(args.repeats):
                    ran = await abba_round(variants, index, concurrency=concurrency, calls=count)
                    for name, latency in ran.items():
                        rounds[name].append(latency)
                base = rounds[BASELINE]
                results["unary"][concurrency] = {
                    name: {
                        "p50_ms": statistics.median(r.p50_ms for r in runs),
                        "p99_ms": statistics.median(r.p99_ms for r in runs),
                        "calls_per_s": statistics.median(r.calls_per_s for r in runs),
                        # Each round's ratio to the baseline's run next to it, then the
                        # median: slow drifts of a shared machine cancel out.
                        "paired": {
                            key: statistics.median(
                                getattr(r, key) / getattr(b, key)
                                for r, b in zip(runs, base, strict=True)
                            )
                            for key in ("p50_ms", "p99_ms", "calls_per_s")
                        },
                    }
                    for name, runs in rounds.items()
                }
            size = 1 << 20
            count = 16 if args.quick else 64
            request = greeter_pb2.HelloRequest(name="x" * size, count=count)
            plain_stream = plain_channel.unary_stream(
                "/greeter.v1.Greeter/LotsOfReplies",
                request_serializer=greeter_pb2.HelloRequest.SerializeToString,
                response_deserializer=greeter_pb2.HelloReply.FromString,
            )
            stream_variants: dict[str, Callable[[], Any]] = {
                BASELINE: lambda: plain_stream(request, timeout=120),
            }
            for name, client in clients.items():
                stream_variants[name] = partial(client.lots_of_replies, request, timeout=120)
            for index in range(args.repeats):
                for name, open_stream in round_order(stream_variants, index):
                    rate = await stream_mb_per_s(open_stream, size * count)
                    results["stream"].setdefault(name, []).append(rate)
            results["stream"] = {
                name: {"mb_per_s": statistics.median(rates)}
                for name, rates in results["stream"].items()
            }
            for client in clients.values():
                await client.close()
            await plain_channel.close()
            if control_channel is not None:
                await control_channel.close()
        finally:
            for replica in replicas:
                replica.stop()
    return results


def table(results: dict[str, Any]) -> str:
    lines = []
    for concurrency, by_name in results["unary"].items():
        lines.append(f"\nunary SayHello, concurrency {concurrency} (ratios: median of rounds' own)")
        lines.append(
            "| variant | p50 ms | p99 ms | calls/s | p50 ratio | p99 ratio | calls/s ratio |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, r in by_name.items():
            paired = r["paired"]
            lines.append(
                f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['calls_per_s']:.0f} "
                f"| {paired['p50_ms']:.3f} | {paired['p99_ms']:.3f} "
                f"| {paired['calls_per_s']:.3f} |"
            )
    base_stream = results["stream"][BASELINE]["mb_per_s"]
    lines.append("\nserver streaming LotsOfReplies, 1 MiB messages")
    lines.append("| variant | MB/s | ratio |")
    lines.append("|---|---|---|")
    for name, r in results["stream"].items():
        lines.append(f"| {name} | {r['mb_per_s']:.0f} | {r['mb_per_s'] / base_stream:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--h2-only",
        action="store_true",
        help="only plain grpc.aio and localfirst over HTTP/2 (no HTTP/3 replicas)",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="run beside one CPU-bound process (a busy loop this command starts and stops)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the replicas to the last CPU and the clients to the others",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also run plain grpc.aio on a second connection as a variant: the ratios' noise floor",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with busy_loop() if args.busy else contextlib.nullcontext():
        results = asyncio.run(run(args))
    results["machine"]["background"] = "one busy loop" if args.busy else "idle"
    results["machine"]["pinned"] = "replicas on the last CPU" if args.pin else "no"
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
