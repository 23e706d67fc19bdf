"""Resilience benchmarks: failover, redeploy and local-first gain, against grpcio in the same run.

    python -m bench.resilience                 # everything (about 3 minutes)
    python -m bench.resilience --quick         # one round each, short redeploy window
    python -m bench.resilience --only failover,redeploy,local --json bench/resilience.json

Every scenario starts fresh replica processes (demo.replica on 127.0.0.18x and
127.0.0.19x, simulated nodes node-a and node-b) for each client variant, so
the variants see the same events:

- failover: load of 4 closed-loop workers calling SayHello (unique id each),
  SIGKILL of the local replica a1; time until a call started after the kill
  succeeds elsewhere, failed calls, p99 during the second after the kill,
  duplicate executions (server side). Clients: localfirst (static target,
  node-a), grpcio round_robin over the same three addresses, and grpcio
  round_robin with a gRFC A6 retryPolicy (UNAVAILABLE, 4 attempts).
- redeploy: dnsmasq (TTL 1 s) publishes three new replicas on new IPs, then
  the old ones get SIGTERM (a rolling update's endpoint flip); time from the
  DNS update to the first call answered by a new replica, failed calls,
  bounded by ``--redeploy-window`` seconds. Clients: localfirst and grpcio
  round_robin, both on ``dns://127.0.0.1:PORT/greeter.test:PORT``.
- local: the two node-b replicas sit behind demo.relay (``--delay-ms`` each
  way), the node-a replica is direct; unary SayHello p50/p99 in a closed loop
  at concurrency 1 and 8 for localfirst (node-a) and grpcio round_robin over
  the same three endpoints, interleaved over rounds (median of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.stats import Latency, closed_loop, machine
from demo.cluster import REPO, ReplicaProcess, free_port
from demo.load import Load
from tests.support.dnsmasq import Dnsmasq
from tests.support.load import count_executions

GENERATED = REPO / "generated"
sys.path.insert(0, str(GENERATED))

from greeter.v1 import greeter_localfirst, greeter_pb2

from protoc_gen_localfirst.runtime import DnsOptions

NAME = "greeter.test"
FAST_DNS = DnsOptions(min_interval=0.2, max_interval=5.0, failure_refresh_interval=0.2, timeout=0.5)
CALL_TIMEOUT = 1.0
RR: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
RR_RETRY = {
    **RR,
    "methodConfig": [
        {
            "name": [{"service": "greeter.v1.Greeter"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.02s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


class Replicas:
    """Replica processes on one port; each records executed SayHello ids."""

    def __init__(self, log_dir: Path, handler_delay: float = 0.002) -> None:
        self.log_dir = log_dir
        self.port = free_port("127.0.0.1")
        self.handler_delay = handler_delay
        self.running: dict[str, ReplicaProcess] = {}
        self.executions: dict[str, Path] = {}

    def start(self, *specs: tuple[str, str, str]) -> None:
        started = []
        for name, node, host in specs:
            path = self.log_dir / f"{name}-{self.port}.executions"
            replica = ReplicaProcess(
                name, node, host, GENERATED, port=self.port, log_dir=self.log_dir,
                extra_args=["--executions-file", str(path),
                            "--handler-delay", str(self.handler_delay)],
            )  # fmt: skip
            self.executions[name] = path
            self.running[name] = replica.start(wait=False)
            started.append(replica)
        for replica in started:
            replica.wait_serving()

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        self.running.pop(name).kill(sig)

    def close(self) -> None:
        for replica in self.running.values():
            replica.stop()
        self.running.clear()


@contextmanager
def replicas(
    log_dir: Path, *specs: tuple[str, str, str], handler_delay: float = 0.002
) -> Iterator[Replicas]:
    group = Replicas(log_dir, handler_delay)
    try:
        group.start(*specs)
        yield group
    finally:
        group.close()


# -- clients -----------------------------------------------------------------------------


class GrpcioClient:
    """Plain grpc.aio with a service config; ``say(id)`` like the generated client."""

    def __init__(self, target: str, service_config: dict[str, Any]) -> None:
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.service_config", json.dumps(service_config))]
        )
        self._say = self.channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            request_serializer=greeter_pb2.HelloRequest.SerializeToString,
            response_deserializer=greeter_pb2.HelloReply.FromString,
        )

    async def call(self, method: str, request_id: str) -> Any:
        return await self._say(greeter_pb2.HelloRequest(name=request_id), timeout=CALL_TIMEOUT)

    async def close(self) -> None:
        await self.channel.close()


class LocalfirstClient:
    def __init__(self, target: str, **options: Any) -> None:
        self.client = greeter_localfirst.GreeterClient(target, node="node-a", **options)

    async def call(self, method: str, request_id: str) -> Any:
        request = greeter_pb2.HelloRequest(name=request_id)
        return await self.client.say_hello(request, timeout=CALL_TIMEOUT)

    async def close(self) -> None:
        await self.client.close()


Factory = Callable[[Replicas, str], Any]


def _ipv4(group: Replicas, names: tuple[str, ...]) -> str:
    return "ipv4:" + ",".join(group.running[n].address for n in names)


def _static(group: Replicas, names: tuple[str, ...]) -> str:
    return "static:///" + ",".join(group.running[n].static for n in names)


# -- failover ------------------------------------------------------------------------------

FAILOVER_VARIANTS: dict[str, Callable[[Replicas], Any]] = {
    "localfirst": lambda g: LocalfirstClient(_static(g, ("a1", "b1", "b2"))),
    "grpcio round_robin": lambda g: GrpcioClient(_ipv4(g, ("a1", "b1", "b2")), RR),
    "grpcio round_robin + retryPolicy": lambda g: GrpcioClient(
        _ipv4(g, ("a1", "b1", "b2")), RR_RETRY
    ),
}


async def failover_once(variant: str, log_dir: Path) -> dict[str, Any]:
    specs = [("a1", "node-a", "127.0.0.184"), ("b1", "node-b", "127.0.0.185"),
             ("b2", "node-b", "127.0.0.186")]  # fmt: skip
    with replicas(log_dir, *specs) as group:
        client = FAILOVER_VARIANTS[variant](group)
        try:
            load = Load(client.call, workers=4, pause=0.002, timeout=CALL_TIMEOUT)
            async with load:
                await load.wait_for(lambda c: c.replica == "a1", since=0)
                await asyncio.sleep(1.0)
                killed = time.monotonic()
                await asyncio.to_thread(group.stop, "a1", signal.SIGKILL)
                await asyncio.sleep(3.0)
        finally:
            await client.close()
        executions = count_executions(group.executions)
    after = [c for c in load.calls if c.ended >= killed]
    elsewhere = load.first_success(killed, lambda r: r != "a1")
    return {
        "failed": len(load.failures()),
        "calls_after_kill": len(after),
        "first_success_elsewhere_ms": None if elsewhere is None else elsewhere * 1000,
        "last_failure_after_kill_ms": max(
            ((c.ended - killed) * 1000 for c in load.failures()), default=0.0
        ),
        "p99_during_ms": load.p99_ms(load.during(killed, killed + 1.0)),
        "p99_before_ms": load.p99_ms([c for c in load.calls if c.ended < killed]),
        "duplicates": executions.duplicate_count,
        "duplicate_ids": sorted(executions.duplicates),
    }


# -- redeploy ------------------------------------------------------------------------------


async def redeploy_once(variant: str, log_dir: Path, window: float) -> dict[str, Any]:
    old = [("a1", "node-a", "127.0.0.187"), ("b1", "node-b", "127.0.0.188"),
           ("b2", "node-b", "127.0.0.189")]  # fmt: skip
    new = [("a2", "node-a", "127.0.0.190"), ("b3", "node-b", "127.0.0.191"),
           ("b4", "node-b", "127.0.0.192")]  # fmt: skip
    with Dnsmasq({}, ttl=1) as dns_server, replicas(log_dir, *old) as group:
        dns_server.set_records({NAME: [h for _, _, h in old]})
        target = dns_server.target(NAME, group.port)
        client: Any = (
            LocalfirstClient(target, dns=FAST_DNS)
            if variant == "localfirst"
            else GrpcioClient(target, RR)
        )
        new_names = {n for n, _, _ in new}
        try:
            load = Load(client.call, workers=4, pause=0.01, timeout=CALL_TIMEOUT)
            async with load:
                await load.wait_for(lambda c: c.ok, since=0)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(group.start, *new)
                await asyncio.sleep(0.5)
                published = time.monotonic()
                await asyncio.to_thread(dns_server.set_records, {NAME: [h for _, _, h in new]})
                await asyncio.gather(*(asyncio.to_thread(group.stop, name) for name, _, _ in old))
                try:
                    await load.wait_for(lambda c: c.replica in new_names, since=published,
                                        timeout=window)  # fmt: skip
                    await asyncio.sleep(1.0)
                except AssertionError:
                    pass  # never landed within the window: reported as such
        finally:
            await client.close()
        executions = count_executions(group.executions)
    landed = load.first_success(published, lambda r: r in new_names)
    failures = [c for c in load.failures() if c.ended >= published]
    return {
        "window_s": window,
        "landed_on_new_ms": None if landed is None else landed * 1000,
        "failed": len(failures),
        "calls_after_update": len([c for c in load.calls if c.ended >= published]),
        "failing_for_ms": max(((c.ended - published) * 1000 for c in failures), default=0.0),
        "first_error": failures[0].code if failures else None,
        "first_error_details": failures[0].details if failures else None,
        "duplicates": executions.duplicate_count,
    }


# -- local-first gain ----------------------------------------------------------------------


@contextmanager
def relay(delay_ms: float, routes: list[tuple[str, str]]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.relay", "--delay-ms", str(delay_ms),
         *(f"{a}={b}" for a, b in routes)],
        cwd=REPO, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"relaying":
            raise RuntimeError("demo.relay did not start")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def local_gain(
    log_dir: Path, delay_ms: float, rounds: int, calls: int
) -> dict[str, dict[str, list[float]]]:
    specs = [("a1", "node-a", "127.0.0.193"), ("b1", "node-b", "127.0.0.194"),
             ("b2", "node-b", "127.0.0.195")]  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {}
    with replicas(log_dir, *specs, handler_delay=0.0) as group:
        port = group.port
        remote = {"b1": f"127.0.0.196:{port}", "b2": f"127.0.0.197:{port}"}
        with relay(delay_ms, [(remote[n], group.running[n].address) for n in ("b1", "b2")]):
            a1 = group.running["a1"].address
            static = f"static:///{a1}@node-a,{remote['b1']}@node-b,{remote['b2']}@node-b"
            rr_target = f"ipv4:{a1},{remote['b1']},{remote['b2']}"
            clients: dict[str, Any] = {
                "grpcio round_robin (baseline)": GrpcioClient(rr_target, RR),
                "localfirst": LocalfirstClient(static),
                "grpcio, local replica only (floor)": GrpcioClient(f"ipv4:{a1}", RR),
                "grpcio, one remote replica only": GrpcioClient(f"ipv4:{remote['b1']}", RR),
            }
            try:
                for _ in range(rounds):
                    for concurrency in (1, 8):
                        for name, client in clients.items():

                            def call(client: Any = client) -> Awaitable[Any]:
                                awaitable: Awaitable[Any] = client.call("SayHello", "bench")
                                return awaitable

                            latency: Latency = await closed_loop(
                                call, concurrency=concurrency, calls=calls, warmup=100
                            )
                            row = results.setdefault(f"{name}|c={concurrency}", {})
                            row.setdefault("p50_ms", []).append(latency.p50_ms)
                            row.setdefault("p99_ms", []).append(latency.p99_ms)
                            row.setdefault("calls_per_s", []).append(latency.calls_per_s)
            finally:
                for client in clients.values():
                    await client.close()
    return results


# -- report --------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(","))
    rounds = 1 if args.quick else args.rounds
    out: dict[str, Any] = {"machine": machine(), "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="localfirst-resilience-") as tmp:
        log_dir = Path(tmp)
        if "failover" in only:
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in FAILOVER_VARIANTS}
            for _ in range(rounds):
                for variant in FAILOVER_VARIANTS:
                    runs[variant].append(await failover_once(variant, log_dir))
            out["failover"] = runs
            print("\nFailover: SIGKILL of the local replica under 4 closed-loop workers "
                  f"(SayHello, {CALL_TIMEOUT:.0f} s deadline), {rounds} round(s), per round\n")  # fmt: skip
            print("| client | failed calls | first success elsewhere ms | last failure ms after kill "
                  "| p99 ms before | p99 ms in 1 s after kill | duplicate executions |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            for variant, rows in runs.items():
                print(
                    f"| {variant} | {' / '.join(str(r['failed']) for r in rows)} | "
                    f"{' / '.join(_fmt(r['first_success_elsewhere_ms'], 1) for r in rows)} | "
                    f"{' / '.join(_fmt(r['last_failure_after_kill_ms'], 0) for r in rows)} | "
                    f"{' / '.join(_fmt(r['p99_before_ms'], 1) for r in rows)} | "
                    f"{' / '.join(_fmt(r['p99_during_ms'], 1) for r in rows)} | "
                    f"{' / '.join(str(r['duplicates']) for r in rows)} |"
                )
        if "redeploy" in only:
            window = 12.0 if args.quick else args.redeploy_window
            redeploy = {
                v: await redeploy_once(v, log_dir, window) for v in ("localfirst", "grpcio")
            }
            out["redeploy"] = redeploy
            print(f"\nRedeploy: all three replicas to new IPs in DNS (dnsmasq, TTL 1 s), old ones "
                  f"SIGTERM right after; window {window:.0f} s\n")  # fmt: skip
            print("| client | first call on a new replica, ms after the DNS update | failed calls "
                  "| failing until ms | first error | duplicate executions |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            for variant, r in redeploy.items():
                name = "localfirst (dns://, FAST_DNS)" if variant == "localfirst" else (
                    "grpcio round_robin (dns://)")  # fmt: skip
                landed = _fmt(r["landed_on_new_ms"], 0)
                if r["landed_on_new_ms"] is None:
                    landed = f"not within {window:.0f} s"
                print(f"| {name} | {landed} | {r['failed']} of {r['calls_after_update']} | "
                      f"{_fmt(r['failing_for_ms'], 0)} | {r['first_error'] or '-'} | "
                      f"{r['duplicates']} |")  # fmt: skip
        if "local" in only:
            calls = 500 if args.quick else args.calls
            gain = await local_gain(log_dir, args.delay_ms, rounds, calls)
            out["local"] = {"delay_ms_per_direction": args.delay_ms, "calls": calls, "runs": gain}
            print(f"\nLocal-first gain: node-b replicas behind demo.relay ({args.delay_ms} ms per "
                  f"direction), {calls} calls per run, median of {rounds} round(s)\n")  # fmt: skip
            print("| client | concurrency | p50 ms | p99 ms | calls/s | p50 vs baseline |")
            print("|---|---|---|---|---|---|")
            base: dict[str, float] = {}
            for key, row in gain.items():
                name, conc = key.split("|")
                p50 = statistics.median(row["p50_ms"])
                if "baseline" in name:
                    base[conc] = p50
                ratio = p50 / base[conc] if conc in base else float("nan")
                print(f"| {name} | {conc[2:]} | {p50:.3f} | {statistics.median(row['p99_ms']):.3f} "
                      f"| {statistics.median(row['calls_per_s']):.0f} | {ratio:.2f} |")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, short windows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="failover,redeploy,local")
    parser.add_argument("--redeploy-window", type=float, default=40.0)
    parser.add_argument("--delay-ms", type=float, default=1.0, help="relay delay per direction")
    parser.add_argument("--calls", type=int, default=2000, help="calls per local-gain run")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
