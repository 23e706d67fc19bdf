"""CPU per unary call, client and server side, HTTP/3 against grpc.aio's HTTP/2.

    python -m bench.h3_cpu                       # c=32, 5 rounds of 2000 calls per variant
    python -m bench.h3_cpu --concurrency 1 --calls 500

End-to-end latency on a 2-core machine moves by 10-50% between runs; CPU
time per call does not. Each round runs ``--calls`` calls of every variant in
turn (interleaved) against replica processes on loopback and reads:

* client: ``time.process_time()`` of this process (all threads: grpc.aio's
  C-core threads work for the baseline too), per call;
* server: user+system CPU of the replica process (``/proc/PID/stat``), per call;
* wall: calls/s of the round.

Variants: ``grpcio h2`` (plain grpc.aio against the HTTP/2 replica, the
baseline of ``bench.run``), ``h3 channel`` (a bare ``H3Channel``
multi-callable: the HTTP/3 transport alone) and ``localfirst h3`` (the
generated client with ``transport="h3"``, as ``bench.run`` measures it),
both against a replica serving HTTP/3 on qh3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio

from bench.stats import closed_loop
from demo.cluster import REPO, ReplicaProcess
from tests.support.certs import make_tls_files

GENERATED = REPO / "generated"
sys.path.insert(0, str(GENERATED))

from greeter.v1 import greeter_localfirst, greeter_pb2

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def main(args: argparse.Namespace) -> None:
    from protoc_gen_localfirst.runtime.http3.channel import H3Channel
    from protoc_gen_localfirst.runtime.tls import ClientTls

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tls = make_tls_files(tmp / "tls")
        h2 = ReplicaProcess(
            "cpu-h2", "node-bench", "127.0.0.89", GENERATED, log_dir=tmp,
            extra_args=["--max-concurrent-streams", "128"],
        )  # fmt: skip
        h3 = ReplicaProcess(
            "cpu-qh3", "node-bench", "127.0.0.90", GENERATED, log_dir=tmp, ca_file=tls.ca,
            extra_args=["--http3", "--certfile", str(tls.cert), "--keyfile", str(tls.key),
                        "--quic-library", "qh3"],
        )  # fmt: skip
        replicas = [h2, h3]
        try:
            for replica in replicas:
                replica.start(wait=False)
            for replica in replicas:
                replica.wait_serving()
            request = greeter_pb2.HelloRequest(name="bench")
            plain = grpc.aio.insecure_channel(f"ipv4:{h2.address}")
            say_h2 = plain.unary_unary(
                "/greeter.v1.Greeter/SayHello",
                request_serializer=greeter_pb2.HelloRequest.SerializeToString,
                response_deserializer=greeter_pb2.HelloReply.FromString,
            )
            channel = H3Channel(h3.host, h3.port, tls=ClientTls(ca_file=str(tls.ca)))
            say_h3 = channel.unary_unary(
                "/greeter.v1.Greeter/SayHello",
                request_serializer=greeter_pb2.HelloRequest.SerializeToString,
                response_deserializer=greeter_pb2.HelloReply.FromString,
            )
            client = greeter_localfirst.GreeterClient(
                f"static:///{h3.static}", node="node-bench", transport="h3", ca_file=str(tls.ca)
            )
            assert h2.process is not None and h3.process is not None
            variants: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {
                "grpcio h2": (lambda: say_h2(request, timeout=10), h2.process.pid),
                "h3 channel": (lambda: say_h3(request, timeout=10), h3.process.pid),
                "localfirst h3": (lambda: client.say_hello(request, timeout=10), h3.process.pid),
            }
            if args.only:
                variants = {k: v for k, v in variants.items() if k in args.only}
            rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in variants}
            for name, (call, _) in variants.items():
                await closed_loop(call, concurrency=args.concurrency, calls=500, warmup=100)
            for _ in range(args.repeats):
                for name, (call, pid) in variants.items():
                    client_before, server_before = time.process_time(), process_cpu(pid)
                    latency = await closed_loop(
                        call, concurrency=args.concurrency, calls=args.calls, warmup=0
                    )
                    client_cpu = time.process_time() - client_before
                    server_cpu = process_cpu(pid) - server_before
                    rows[name].append(
                        (
                            client_cpu / args.calls * 1e6,
                            server_cpu / args.calls * 1e6,
                            latency.calls_per_s,
                            latency.p50_ms,
                        )
                    )
            print(f"c={args.concurrency}, {args.calls} calls x {args.repeats} rounds (medians)")
            print(f"{'variant':16} {'client us/call':>15} {'server us/call':>15} "
                  f"{'calls/s':>9} {'p50 ms':>7}")  # fmt: skip
            for name, values in rows.items():
                med = [statistics.median(v[i] for v in values) for i in range(4)]
                print(f"{name:16} {med[0]:15.1f} {med[1]:15.1f} {med[2]:9.0f} {med[3]:7.2f}")
            await client.close()
            await channel.close()
            await plain.close()
        finally:
            for replica in replicas:
                replica.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
