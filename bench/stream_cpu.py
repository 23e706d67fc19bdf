"""The clients' CPU per streamed message over real HTTP/2, against plain grpc.

    python -m bench.stream_cpu                       # 2000 small messages a stream, 10 rounds
    python -m bench.stream_cpu --messages 5000 --rounds 20

``bench.client_cpu`` measures unary calls; this measures the per-message
path of streams, where a call's own setup is spread over many messages. One
process runs, against one replica process (``demo.replica``), in
interleaved rounds: a server stream of small replies (``LotsOfReplies``)
and a client stream of small requests (``LotsOfGreetings``), each through a
raw grpc multi-callable (the baseline) and through the generated client,
asyncio (``GreeterClient`` / grpc.aio) and blocking (``GreeterSyncClient`` /
grpc). A sample is this process's CPU (``time.process_time``, grpc's
threads included) per message; the table gives medians over rounds and the
median of each round's ratio to its baseline.
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
from typing import Any

import grpc
import grpc.aio

from bench.stats import describe, machine, round_order
from demo.cluster import REPO, ReplicaProcess

sys.path.insert(0, str(REPO / "generated"))

from greeter.v1 import greeter_localfirst, greeter_pb2

Stream = Callable[[], Awaitable[None] | None]
"""One whole stream, asyncio (returns a coroutine) or blocking (returns None)."""


async def cpu_per_message(stream: Stream, messages: int) -> float:
    started = time.process_time()
    result = stream()
    if result is not None:
        await result
    return (time.process_time() - started) / messages * 1e6


def streams(
    address: str, target: str, messages: int
) -> tuple[dict[str, tuple[Stream, Stream]], Any]:
    """(baseline, localfirst) stream pairs, and the closers of what they use."""
    paths: dict[str, Any] = {
        "request_serializer": greeter_pb2.HelloRequest.SerializeToString,
        "response_deserializer": greeter_pb2.HelloReply.FromString,
    }
    aio_channel = grpc.aio.insecure_channel(f"ipv4:{address}")
    channel = grpc.insecure_channel(f"ipv4:{address}")
    aio_down = aio_channel.unary_stream("/greeter.v1.Greeter/LotsOfReplies", **paths)
    aio_up = aio_channel.stream_unary("/greeter.v1.Greeter/LotsOfGreetings", **paths)
    down = channel.unary_stream("/greeter.v1.Greeter/LotsOfReplies", **paths)
    up = channel.stream_unary("/greeter.v1.Greeter/LotsOfGreetings", **paths)
    client = greeter_localfirst.GreeterClient(target, node="node-bench")
    sync_client = greeter_localfirst.GreeterSyncClient(target, node="node-bench")
    ask = greeter_pb2.HelloRequest(name="b", count=messages)
    requests = [greeter_pb2.HelloRequest(name="b")] * messages

    async def plain_aio_down() -> None:
        async for _ in aio_down(ask, timeout=60):
            pass

    async def localfirst_aio_down() -> None:
        async for _ in client.lots_of_replies(ask, timeout=60):
            pass

    async def plain_aio_up() -> None:
        await aio_up(iter(requests), timeout=60)

    async def localfirst_aio_up() -> None:
        await client.lots_of_greetings(requests, timeout=60)

    def plain_down() -> None:
        for _ in down(ask, timeout=60):
            pass

    def localfirst_down() -> None:
        for _ in sync_client.lots_of_replies(ask, timeout=60):
            pass

    def plain_up() -> None:
        up(iter(requests), timeout=60)

    def localfirst_up() -> None:
        sync_client.lots_of_greetings(requests, timeout=60)

    async def close() -> None:
        await client.close()
        sync_client.close()
        await aio_channel.close()
        channel.close()

    pairs: dict[str, tuple[Stream, Stream]] = {
        "asyncio, server stream": (plain_aio_down, localfirst_aio_down),
        "asyncio, client stream": (plain_aio_up, localfirst_aio_up),
        "blocking, server stream": (plain_down, localfirst_down),
        "blocking, client stream": (plain_up, localfirst_up),
    }
    return pairs, close


async def run(messages: int, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        replica = ReplicaProcess(
            "bench-streams", "node-bench", "127.0.0.89", REPO / "generated", log_dir=Path(tmp)
        )
        replica.start()
        try:
            pairs, close = streams(replica.address, f"static:///{replica.static}", messages)
            samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
            for plain, ours in pairs.values():  # warm up: connections, caches
                await cpu_per_message(plain, messages)
                await cpu_per_message(ours, messages)
            for index in range(rounds):
                for name, (plain, ours) in pairs.items():
                    both = {0: plain, 1: ours}
                    for side, stream in round_order(both, index):
                        samples[name][side].append(await cpu_per_message(stream, messages))
            await close()
        finally:
            replica.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per stream")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    samples = asyncio.run(run(args.messages, args.rounds))
    print("machine: " + describe(machine()))
    print("| stream of small messages | plain grpc, us/message | localfirst | ratio |")
    print("|---|---|---|---|")
    for name, (plain, ours) in samples.items():
        ratio = statistics.median(b / a for a, b in zip(plain, ours, strict=True))
        print(
            f"| {name} | {statistics.median(plain):.1f} | {statistics.median(ours):.1f} "
            f"| {ratio:.3f} |"
        )


if __name__ == "__main__":
    main()
