"""The client's own cost per unary call, without the network (issue 13).

    python -m bench.overhead            # microseconds per call of the asyncio client

The generated client calls an in-process fake channel whose calls answer at
once with the trailers a replica sends (node, load report): what is measured
is the client's work per call (call state machine, balancer, load accounting,
channel pool, observers' records), the part that adds to grpc's own cost.
``plain`` calls the fake multi-callable directly: the floor of the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

from demo.cluster import REPO
from protoc_gen_localfirst.runtime.client.observers import BaseObserver
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY, LoadReport, encode

sys.path.insert(0, str(REPO / "generated"))

from greeter.v1 import greeter_localfirst, greeter_pb2

TRAILERS = (
    (NODE_METADATA_KEY, "node-bench"),
    (LOAD_REPORT_KEY, encode(LoadReport(in_flight=3, limit=128))),
)


class _FakeAioCall:
    def __init__(self, response: Any) -> None:
        self._response = response

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response
        yield  # a generator that never suspends

    async def trailing_metadata(self) -> Any:
        return TRAILERS

    def cancel(self) -> bool:
        return False


class _FakeMulticallable:
    def __init__(self, call_type: type, reply: Any) -> None:
        self._call_type = call_type
        self._reply = reply

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        return self._call_type(self._reply)


class _FakeChannel:
    def __init__(self, call_type: type) -> None:
        self._call_type = call_type

    def unary_unary(self, path: str, **kwargs: Any) -> _FakeMulticallable:
        return _FakeMulticallable(self._call_type, greeter_pb2.HelloReply(message="hi"))

    async def close(self) -> None:
        return None


class AioBench(greeter_localfirst.GreeterClient):
    def _new_channel(self, endpoint: Endpoint) -> Any:
        return _FakeChannel(_FakeAioCall)


def _target(endpoints: int) -> str:
    nodes = ["node-bench"] + [f"node-{i}" for i in range(1, endpoints)]
    return "static:///" + ",".join(f"127.0.0.1:{5000 + i}@{n}" for i, n in enumerate(nodes))


async def aio_us_per_call(calls: int, *, endpoints: int, observed: bool) -> float:
    observers = [BaseObserver()] if observed else []
    client = AioBench(_target(endpoints), node="node-bench", observers=observers)
    request = greeter_pb2.HelloRequest(name="bench")
    for _ in range(500):
        await client.say_hello(request, timeout=10)
    started = time.perf_counter()
    for _ in range(calls):
        await client.say_hello(request, timeout=10)
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed / calls * 1e6


async def plain_us_per_call(calls: int) -> float:
    say = _FakeChannel(_FakeAioCall).unary_unary("/greeter.v1.Greeter/SayHello")
    request = greeter_pb2.HelloRequest(name="bench")
    started = time.perf_counter()
    for _ in range(calls):
        call = say(request, timeout=10)
        await call
        await call.trailing_metadata()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    variants: dict[str, Callable[[], Any]] = {
        "plain (fake channel)": lambda: plain_us_per_call(args.calls),
        "localfirst, 1 endpoint": lambda: aio_us_per_call(args.calls, endpoints=1, observed=False),
        "localfirst, 8 endpoints": lambda: aio_us_per_call(args.calls, endpoints=8, observed=False),
        "localfirst, 1 endpoint, 1 observer": lambda: aio_us_per_call(
            args.calls, endpoints=1, observed=True
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            results[name].append(asyncio.run(variant()))
    print("| asyncio client, unary, no I/O | us per call (median) | min |")
    print("|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(runs):.1f} | {min(runs):.1f} |")


if __name__ == "__main__":
    main()
