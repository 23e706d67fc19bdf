"""Hotspot benchmark (issue 9): local-first under more load than the local replica can serve.

    python -m bench.hotspot                          # rates 0.5,1,1.5,2.5 x 10 s (about 2 minutes)
    python -m bench.hotspot --quick                  # smoke run: 0.5,1.5 x 3 s
    python -m bench.hotspot --kill                   # also: SIGKILL + restart of a1 at 1.5x (+30 s)
    python -m bench.hotspot --serve-option KEY=VALUE --client-option KEY=VALUE --json out.json

Four replicas of limited capacity (bench/hotspot_replica.py: SayHello holds an
``asyncio.Semaphore(4)`` around ``asyncio.sleep(0.020)``, so one replica serves
at most 200 calls/s, ``--capacity`` 175 nominally): a1 on node-a at
127.0.0.201 (direct), b1..b3 on node-b at 127.0.0.202-204, reached through one
demo.relay process (``--delay-ms`` each way) listening on 127.0.0.212-214. All
on one port.

Load comes from ``--clients`` separate OS processes on "node-a"
(NODE_NAME=node-a). It is open-loop: each process starts calls on a fixed
schedule at rate/N (the processes' schedules interleave evenly), whether or
not earlier calls have returned; a call that starts more than 10 ms after its
scheduled time is counted as a late start (a sign the load generator, not the
system under test, was short of CPU). Every call is SayHello with a 1 s
deadline; the request name (``window:worker:seq``) lets the harness attribute
each server-side execution to a call and its scheduled time.

Rates are multiples of one replica's nominal capacity. For every rate, in the
same run and against the same replica processes, one after the other:

- localfirst: the generated ``GreeterClient`` with its defaults (plus any
  ``--client-option``) on ``static:///127.0.0.201:P@node-a,127.0.0.212:P@node-b,...``;
- grpcio round_robin: a plain ``grpc.aio`` channel with
  ``grpc.lb_policy_name=round_robin`` over ``ipv4:`` the same four addresses.

Reported per rate and client: offered calls/s; ok calls/s in steady state
(calls scheduled after the first ``--warmup`` seconds); failed calls over the
whole window, of how many, by status code; p50/p99 latency of ok steady-state
calls (from the call's actual start); the share served by the local replica,
from the replies' ``node`` and from the replicas' own execution logs; the
local replica's work in steady state, calls whose 20 ms it finished of those
it started (grpc cancels a handler at its call's deadline, so the rest is work
thrown away); late starts. ``--kill`` adds, at 1.5x for both clients: SIGKILL of a1 3 s into the
window and a restart at the same address 2 s later, reporting failed calls, ok
calls per 1 s bucket (a collapse shows as a run of zeros) and the local share
in the last 3 s (does traffic come back to the local replica?).

``--serve-option KEY=VALUE`` (repeatable) is passed to ``serve(**options)``
of every replica and ``--client-option KEY=VALUE`` to the ``GreeterClient``
constructor (values: Python literals, runtime constructor calls such as
``RetryPolicy(max_attempts=2)``, else strings). Unknown keys fail at start:
the client's in this process before anything runs, the server's when the
first replica exits with the error (its log is shown).

Every process this harness starts is stopped by its PID at the end, on Ctrl-C
and on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.hotspot_replica import parse_options
from demo.cluster import REPO

GENERATED = REPO / "generated"
LOCAL_NODE = "node-a"
REMOTE_NODE = "node-b"
REPLICAS = [("a1", LOCAL_NODE, "127.0.0.201"), ("b1", REMOTE_NODE, "127.0.0.202"),
            ("b2", REMOTE_NODE, "127.0.0.203"), ("b3", REMOTE_NODE, "127.0.0.204")]  # fmt: skip
RELAY_HOSTS = {"b1": "127.0.0.212", "b2": "127.0.0.213", "b3": "127.0.0.214"}
VARIANTS = ("localfirst", "grpcio round_robin")
LATE = 0.010
"""A call that starts this much after its scheduled time is a late start."""

_CHILDREN: list[subprocess.Popen[bytes]] = []
"""Every process this harness started and has not reaped: stopped by PID on the way out."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GENERATED), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(list(argv), cwd=REPO, env=kwargs.pop("env", _env()), **kwargs)
    _CHILDREN.append(process)
    return process


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal one child of ours by PID (unless already reaped) and reap it."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                process.kill()
            process.wait()
    if process in _CHILDREN:
        _CHILDREN.remove(process)


def _stop_all_children() -> None:
    while _CHILDREN:
        _stop(_CHILDREN[-1], signal.SIGKILL)  # removes it


# -- replicas and relay ------------------------------------------------------------------


def common_port(hosts: Sequence[str], attempts: int = 50) -> int:
    """A TCP port free on every one of ``hosts`` right now."""
    for _ in range(attempts):
        with socket.socket() as sock:
            sock.bind((hosts[0], 0))
            port = int(sock.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {', '.join(hosts)}")


@dataclass
class Replica:
    """One bench.hotspot_replica process; ``start`` again after a kill reuses the address."""

    name: str
    node: str
    host: str
    port: int
    log_dir: Path
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def executions(self) -> Path:
        return self.log_dir / f"{self.name}.executions"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = _spawn(
                [sys.executable, "-m", "bench.hotspot_replica", "--host", self.host,
                 "--port", str(self.port), "--node", self.node, "--name", self.name,
                 "--executions-file", str(self.executions), *self.extra_args],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def wait_serving(self, timeout: float = 30.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"ipv4:{self.address}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    log = self.log_path.read_text(errors="replace")
                    raise RuntimeError(f"replica {self.name} exited at start:\n{log}")
                with suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.05)
        raise TimeoutError(f"replica {self.name} at {self.address} did not become SERVING")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        assert self.process is not None
        _stop(self.process, sig)
        self.process = None

    def log(self, window: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(worker, seq) of every SayHello of ``window`` this replica (all incarnations)
        started and executed (see bench/hotspot_replica.py)."""
        started: list[tuple[int, int]] = []
        executed: list[tuple[int, int]] = []
        if not self.executions.exists():
            return started, executed
        for line in self.executions.read_text().splitlines():
            into = executed
            if line.startswith("> "):
                into, line = started, line[2:]
            if line.startswith(f"{window}:"):
                _, worker, seq = line.split(":")
                into.append((int(worker), int(seq)))
        return started, executed


@contextmanager
def cluster(
    log_dir: Path, delay_ms: float, replica_args: Sequence[str]
) -> Iterator[dict[str, Replica]]:
    port = common_port([h for _, _, h in REPLICAS] + list(RELAY_HOSTS.values()))
    group = {
        name: Replica(name, node, host, port, log_dir, replica_args)
        for name, node, host in REPLICAS
    }
    relay: subprocess.Popen[bytes] | None = None
    try:
        for replica in group.values():
            replica.start()
        for replica in group.values():
            replica.wait_serving()
        routes = [f"{RELAY_HOSTS[n]}:{port}={group[n].address}" for n in RELAY_HOSTS]
        relay = _spawn(
            [sys.executable, "-m", "demo.relay", "--delay-ms", str(delay_ms), *routes],
            stdout=subprocess.PIPE,
        )
        assert relay.stdout is not None
        if relay.stdout.readline().strip() != b"relaying":
            raise RuntimeError("demo.relay did not start")
        yield group
    finally:
        if relay is not None:
            _stop(relay)
        for replica in group.values():
            if replica.process is not None:
                replica.kill(signal.SIGTERM)


def targets(group: dict[str, Replica]) -> tuple[str, str]:
    """(static target for localfirst, ipv4 target for round_robin), same four addresses."""
    a1 = group["a1"]
    remote = [(f"{RELAY_HOSTS[n]}:{group[n].port}", group[n].node) for n in RELAY_HOSTS]
    static = "static:///" + ",".join(
        [f"{a1.address}@{a1.node}", *(f"{addr}@{node}" for addr, node in remote)]
    )
    ipv4 = "ipv4:" + ",".join([a1.address, *(addr for addr, _ in remote)])
    return static, ipv4


# -- client worker (a separate process) --------------------------------------------------


async def worker_main(spec: dict[str, Any]) -> None:
    """Open-loop SayHello at ``spec["rate"]`` calls/s; prints "ready", waits for t0, prints JSON."""
    sys.path.insert(0, str(GENERATED))
    import grpc
    import grpc.aio
    from greeter.v1 import greeter_localfirst, greeter_pb2

    timeout = spec["timeout"]
    client: Any = None
    channel: grpc.aio.Channel | None = None
    if spec["variant"] == "localfirst":
        options = parse_options(spec["client_options"], "--client-option")
        client = greeter_localfirst.GreeterClient(spec["target"], **options)

        async def say(name: str) -> Any:
            return await client.say_hello(greeter_pb2.HelloRequest(name=name), timeout=timeout)

        async def who() -> Any:
            return await client.who_am_i(greeter_pb2.WhoAmIRequest(), timeout=5.0)

    else:
        channel = grpc.aio.insecure_channel(
            spec["target"], options=[("grpc.lb_policy_name", "round_robin")]
        )
        say_call = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            request_serializer=greeter_pb2.HelloRequest.SerializeToString,
            response_deserializer=greeter_pb2.HelloReply.FromString,
        )
        who_call = channel.unary_unary(
            "/greeter.v1.Greeter/WhoAmI",
            request_serializer=greeter_pb2.WhoAmIRequest.SerializeToString,
            response_deserializer=greeter_pb2.HelloReply.FromString,
        )

        async def say(name: str) -> Any:
            return await say_call(greeter_pb2.HelloRequest(name=name), timeout=timeout)

        async def who() -> Any:
            return await who_call(greeter_pb2.WhoAmIRequest(), timeout=5.0, wait_for_ready=True)

    # Warm-up outside the window: WhoAmI does not take a replica's semaphore.
    for _ in range(8):
        await who()
    print("ready", flush=True)
    t0 = float(await asyncio.to_thread(sys.stdin.readline))

    rate, offset, seconds = spec["rate"], spec["offset"], spec["seconds"]
    prefix = f"{spec['window']}:{spec['worker']}:"
    calls: list[list[Any]] = []

    async def one(seq: int, due: float) -> None:
        started = time.monotonic()
        try:
            reply = await say(f"{prefix}{seq}")
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            name = code.name if code is not None else type(error).__name__
            calls.append([seq, started - due, time.monotonic() - started, name, ""])
        except Exception as error:  # noqa: BLE001 - reported as a failure of its own kind
            calls.append([seq, started - due, time.monotonic() - started,
                          f"client {type(error).__name__}", ""])  # fmt: skip
        else:
            calls.append([seq, started - due, time.monotonic() - started, "", reply.node])

    tasks = []
    seq = 0
    while (at := offset + seq / rate) < seconds:
        due = t0 + at
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(seq, due)))
        seq += 1
    await asyncio.gather(*tasks)
    stats = client.stats.as_dict() if client is not None else {}
    if client is not None:
        await client.close()
    if channel is not None:
        await channel.close()
    sys.stdout.write(json.dumps({"calls": calls, "scheduled": seq, "client_stats": stats}))
    sys.stdout.flush()


# -- one window ------------------------------------------------------------------------


@dataclass
class Call:
    worker: int
    seq: int
    at: float  # scheduled, seconds after t0
    lag: float
    latency: float
    code: str  # "" when ok
    node: str

    @property
    def ok(self) -> bool:
        return not self.code

    @property
    def ended(self) -> float:
        return self.at + self.lag + self.latency


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _read_line(stream: IO[bytes]) -> bytes:
    return stream.readline()


class Bench:
    def __init__(self, args: argparse.Namespace, group: dict[str, Replica], log_dir: Path):
        self.args = args
        self.group = group
        self.log_dir = log_dir
        self.static, self.ipv4 = targets(group)
        self.windows = 0

    async def window(
        self,
        variant: str,
        multiple: float,
        seconds: float,
        during: Callable[[float], Any] | None = None,
    ) -> dict[str, Any]:
        """One load window; ``during(t0)`` (a coroutine function) runs alongside it."""
        args = self.args
        self.windows += 1
        window = f"w{self.windows}"
        total = multiple * args.capacity
        per = total / args.clients
        offsets = [w / total for w in range(args.clients)]
        env = _env()
        env["NODE_NAME"] = LOCAL_NODE
        workers = []
        logs = []
        side: asyncio.Task[Any] | None = None
        try:
            for w in range(args.clients):
                spec = {
                    "variant": variant, "target": self.static if variant == "localfirst"
                    else self.ipv4, "client_options": args.client_option or [],
                    "window": window, "worker": w, "rate": per, "offset": offsets[w],
                    "seconds": seconds, "timeout": args.deadline,
                }  # fmt: skip
                log = (self.log_dir / f"{window}-client{w}.log").open("wb")
                logs.append(log)
                workers.append(_spawn(
                    [sys.executable, "-m", "bench.hotspot", "--worker", json.dumps(spec)],
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                ))  # fmt: skip
            for w, process in enumerate(workers):
                assert process.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(_read_line, process.stdout), 60)
                if line.strip() != b"ready":
                    raise RuntimeError(
                        f"client process {w} did not start:\n"
                        + (self.log_dir / f"{window}-client{w}.log").read_text(errors="replace")
                    )
            t0 = time.monotonic() + 0.2
            for process in workers:
                assert process.stdin is not None
                process.stdin.write(f"{t0!r}\n".encode())
                process.stdin.flush()
            side = asyncio.create_task(during(t0)) if during is not None else None
            outputs = await asyncio.gather(
                *(asyncio.to_thread(p.stdout.read) for p in workers if p.stdout is not None)
            )
            event = await side if side is not None else None
            for w, (process, out) in enumerate(zip(workers, outputs, strict=True)):
                if process.wait() != 0 or not out:
                    raise RuntimeError(
                        f"client process {w} failed:\n"
                        + (self.log_dir / f"{window}-client{w}.log").read_text(errors="replace")
                    )
        finally:
            if side is not None and not side.done():
                side.cancel()
            for process in workers:
                _stop(process, signal.SIGKILL)
            for log in logs:
                log.close()
        results = [json.loads(out) for out in outputs]
        calls = [
            Call(w, seq, offsets[w] + seq / per, lag, latency, code, node)
            for w, result in enumerate(results)
            for seq, lag, latency, code, node in result["calls"]
        ]
        await asyncio.sleep(0.3)  # the replicas' last log lines
        logs_by_replica = {name: r.log(window) for name, r in self.group.items()}
        started = {name: log[0] for name, log in logs_by_replica.items()}
        executed = {name: log[1] for name, log in logs_by_replica.items()}
        at = {(c.worker, c.seq): c.at for c in calls}
        summary = summarize(calls, started, executed, at, seconds, args.warmup)
        summary.update(
            variant=variant, load=multiple, window=window, seconds=seconds,
            client_stats=[r["client_stats"] for r in results],
        )  # fmt: skip
        if event is not None:
            summary["event"] = event
            summary.update(kill_summary(calls, executed, at, seconds, event))
        await asyncio.sleep(0.5)  # let the replicas' queues empty before the next window
        return summary

    async def kill_restart(self, t0: float) -> dict[str, Any]:
        """SIGKILL a1 at t0 + kill_at, start it again at t0 + kill_at + restart_after."""
        args = self.args
        a1 = self.group["a1"]
        await asyncio.sleep(max(0.0, t0 + args.kill_at - time.monotonic()))
        killed = time.monotonic() - t0
        await asyncio.to_thread(a1.kill, signal.SIGKILL)
        await asyncio.sleep(max(0.0, t0 + args.kill_at + args.restart_after - time.monotonic()))
        restarted = time.monotonic() - t0
        a1.start()
        await asyncio.to_thread(a1.wait_serving)
        return {"killed_at": killed, "restarted_at": restarted,
                "serving_at": time.monotonic() - t0}  # fmt: skip


def summarize(
    calls: list[Call],
    started: dict[str, list[tuple[int, int]]],
    executed: dict[str, list[tuple[int, int]]],
    at: dict[tuple[int, int], float],
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    steady = [c for c in calls if c.at >= warmup]
    steady_ok = [c for c in steady if c.ok]
    failed = [c for c in calls if not c.ok]
    latencies = [c.latency * 1000 for c in steady_ok]
    lags = [c.lag for c in calls]
    server_steady = {
        name: sum(1 for key in keys if at.get(key, -1.0) >= warmup)
        for name, keys in executed.items()
    }
    server_total = sum(server_steady.values())
    started_steady = {
        name: sum(1 for key in keys if at.get(key, -1.0) >= warmup)
        for name, keys in started.items()
    }
    ok_keys = {(c.worker, c.seq) for c in calls if c.ok}
    wasted = sum(1 for keys in executed.values() for key in keys if key not in ok_keys)
    return {
        "offered": len(calls),
        "offered_per_s": len(calls) / seconds,
        "ok_per_s_steady": len(steady_ok) / (seconds - warmup),
        "failed": len(failed),
        "failed_codes": dict(collections.Counter(c.code for c in failed).most_common()),
        "failed_steady": len(steady) - len(steady_ok),
        "offered_steady": len(steady),
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "local_share_replies": (
            sum(1 for c in steady_ok if c.node == LOCAL_NODE) / len(steady_ok)
            if steady_ok
            else None
        ),
        "local_share_server": server_steady["a1"] / server_total if server_total else None,
        "server_executions_steady": server_steady,
        "server_executions_for_failed_calls": wasted,
        "server_started_steady": started_steady,
        "late_starts": sum(1 for lag in lags if lag > LATE),
        "lag_p99_ms": (_pct(lags, 99) or 0.0) * 1000,
        "lag_max_ms": max(lags, default=0.0) * 1000,
    }


def kill_summary(
    calls: list[Call],
    executed: dict[str, list[tuple[int, int]]],
    at: dict[tuple[int, int], float],
    seconds: float,
    event: dict[str, Any],
) -> dict[str, Any]:
    buckets = int(seconds + 0.999)
    ok = [0] * buckets
    failed = [0] * buckets
    local = [0] * buckets
    for c in calls:
        b = min(buckets - 1, int(c.at))
        if c.ok:
            ok[b] += 1
            local[b] += c.node == LOCAL_NODE
        else:
            failed[b] += 1
    tail = [c for c in calls if c.at >= seconds - 3 and c.ok]
    tail_server = {
        name: sum(1 for key in keys if at.get(key, -1.0) >= seconds - 3)
        for name, keys in executed.items()
    }
    back = [c.ended for c in calls if c.ok and c.node == LOCAL_NODE
            and c.at + c.lag >= event["restarted_at"]]  # fmt: skip
    return {
        "ok_per_1s": ok,
        "failed_per_1s": failed,
        "local_per_1s": local,
        "local_share_last_3s_replies": (
            sum(1 for c in tail if c.node == LOCAL_NODE) / len(tail) if tail else None
        ),
        "local_share_last_3s_server": (
            tail_server["a1"] / sum(tail_server.values()) if sum(tail_server.values()) else None
        ),
        "first_local_reply_at": min(back, default=None),
    }


# -- report ------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in codes.items()) or "-"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nHotspot: {args.clients} client processes on {LOCAL_NODE}, open loop, SayHello "
          f"with a {args.deadline:g} s deadline, {args.seconds:g} s per rate (steady state: "
          f"after {args.warmup:g} s); replicas {args.replica_concurrency} x {args.work_ms:g} ms "
          f"(nominal capacity {args.capacity:g} calls/s); node-b behind demo.relay "
          f"({args.delay_ms:g} ms each way)\n")  # fmt: skip
    print(
        "| load | client | offered calls/s | ok calls/s | failed | failures by code "
        "| p50 ms | p99 ms | local share (replies) | local share (server) "
        "| a1 work done of started | late starts |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']:g}x | {r['variant']} | {r['offered_per_s']:.0f} "
              f"| {r['ok_per_s_steady']:.0f} | {r['failed']} of {r['offered']} "
              f"| {_codes(r['failed_codes'])} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
              f"| {_share(r['local_share_replies'])} | {_share(r['local_share_server'])} "
              f"| {r['server_executions_steady']['a1']} of {r['server_started_steady']['a1']} "
              f"| {r['late_starts']} |")  # fmt: skip


def print_kill(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nKill: {args.kill_load:g}x, SIGKILL of a1 {args.kill_at:g} s into the window, "
          f"restarted (same address) {args.restart_after:g} s later; {args.kill_seconds:g} s "
          "window, calls by scheduled second\n")  # fmt: skip
    print(
        "| client | failed | failures by code | ok calls per 1 s | local share, last 3 s "
        "(replies / server) | a1 killed / restarted / serving again at | first local reply "
        "after the restart at |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        e = r["event"]
        first = r["first_local_reply_at"]
        print(f"| {r['variant']} | {r['failed']} of {r['offered']} | {_codes(r['failed_codes'])} "
              f"| {' '.join(str(n) for n in r['ok_per_1s'])} "
              f"| {_share(r['local_share_last_3s_replies'])} / "
              f"{_share(r['local_share_last_3s_server'])} | {e['killed_at']:.1f} / "
              f"{e['restarted_at']:.1f} / {e['serving_at']:.1f} s "
              f"| {'never' if first is None else f'{first:.2f} s'} |")  # fmt: skip


async def check_client_options(options: list[str] | None) -> None:
    """Build (and close) one GreeterClient with the options: unknown keys fail here, first."""
    sys.path.insert(0, str(GENERATED))
    from greeter.v1 import greeter_localfirst

    parsed = parse_options(options, "--client-option")
    try:
        client = greeter_localfirst.GreeterClient(
            "static:///127.0.0.201:1@node-a", node=LOCAL_NODE, **parsed
        )
    except TypeError as error:
        raise SystemExit(f"--client-option: GreeterClient rejects them: {error}") from error
    await client.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from bench.stats import machine

    await check_client_options(args.client_option)
    parse_options(args.serve_option, "--serve-option")  # syntax; serve() itself checks keys
    replica_args = ["--concurrency", str(args.replica_concurrency), "--work-ms", str(args.work_ms)]
    for item in args.serve_option or ():
        replica_args += ["--serve-option", item]
    out: dict[str, Any] = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker")},
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="localfirst-hotspot-") as tmp:
        log_dir = Path(tmp)
        with cluster(log_dir, args.delay_ms, replica_args) as group:
            bench = Bench(args, group, log_dir)
            rows = []
            for multiple in args.rates:
                for variant in VARIANTS:
                    row = await bench.window(variant, multiple, args.seconds)
                    print(f"  {multiple:g}x {variant}: ok {row['ok_per_s_steady']:.0f}/s, "
                          f"failed {row['failed']} of {row['offered']}", flush=True)  # fmt: skip
                    rows.append(row)
            out["rates"] = rows
            if rows:
                print_table(rows, args)
            if args.kill:
                kills = []
                for variant in VARIANTS:
                    row = await bench.window(
                        variant, args.kill_load, args.kill_seconds, bench.kill_restart
                    )
                    print(f"  kill, {variant}: failed {row['failed']} of {row['offered']}",
                          flush=True)  # fmt: skip
                    kills.append(row)
                out["kill"] = kills
                print_kill(kills, args)
    out["duration_s"] = time.monotonic() - began
    print(f"\ndone in {out['duration_s']:.0f} s")
    return out


def _rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: rates 0.5,1.5, 3 s each")
    parser.add_argument("--rates", type=_rates, help="multiples of --capacity (0.5,1,1.5,2.5)")
    parser.add_argument("--capacity", type=float, default=175.0, help="one replica, calls/s")
    parser.add_argument("--seconds", type=float, help="per rate (10; --quick 3)")
    parser.add_argument(
        "--warmup", type=float, help="seconds left out of steady state (2; --quick 1)"
    )
    parser.add_argument("--clients", type=int, default=3, help="client processes on node-a")
    parser.add_argument("--deadline", type=float, default=1.0, help="per call, seconds")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="relay delay per direction")
    parser.add_argument("--replica-concurrency", type=int, default=4)
    parser.add_argument("--work-ms", type=float, default=20.0, help="time one SayHello works")
    parser.add_argument("--kill", action="store_true", help="add the kill/restart scenario")
    parser.add_argument("--kill-load", type=float, default=1.5)
    parser.add_argument("--kill-seconds", type=float, help="kill window (10; --quick 8)")
    parser.add_argument("--kill-at", type=float, default=3.0)
    parser.add_argument("--restart-after", type=float, default=2.0)
    parser.add_argument("--serve-option", action="append", metavar="KEY=VALUE",
                        help="passed to serve(**options) of every replica (repeatable)")  # fmt: skip
    parser.add_argument("--client-option", action="append", metavar="KEY=VALUE",
                        help="passed to the GreeterClient constructor (repeatable)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(json.loads(args.worker)))
        return
    if args.rates is None:
        args.rates = [0.5, 1.5] if args.quick else [0.5, 1.0, 1.5, 2.5]
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.kill_seconds is None:
        args.kill_seconds = 8.0 if args.quick else 10.0
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    if args.kill_at + args.restart_after + 3 > args.kill_seconds:
        parser.error("the kill window must last 3 s past the restart")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    try:
        out = asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        _stop_all_children()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
