"""Memory-abuse benchmark: server RSS under request floods, and a polite client's calls.

    python -m bench.memory_abuse                     # both scenarios, serve() defaults
    python -m bench.memory_abuse --baseline          # the same with every memory bound off
    python -m bench.memory_abuse --cpu-hog           # beside a CPU-bound process
    python -m bench.memory_abuse --scenario h3 --duration 8 --json out.json

A fresh server process per scenario (bench/memory_server.py: ``serve()`` with its
defaults, HTTP/2 + HTTP/3 on 127.0.0.1; ``SayHello("slow...")`` and
``LotsOfGreetings`` hold their calls ``--slow`` seconds). Its RSS (``VmRSS`` of
/proc/PID/status) is sampled every 50 ms from a thread; "before" is the median
of the second before the abuse, "peak" the highest sample (and the kernel's
``VmHWM``). The abuse comes from another process:

- ``h2``: ``--h2-streams`` (1000) concurrent unary ``SayHello`` calls, each a
  ``--h2-size`` (1 MiB) request, over ``--h2-connections`` (1) grpc.aio channels;
- ``h3``: ``--h3-connections`` (3) raw QUIC connections (qh3, the tests' raw
  client) x as many request streams as the server grants (up to 100) x
  ``--h3-size`` (16 MiB) of ``LotsOfGreetings`` request messages (1 MiB each)
  whose handler does not read them; sent as fast as QUIC takes them (the
  abuser keeps at most 256 KiB unsent per stream, so its own memory stays small).

Meanwhile this process probes: one small unary ``SayHello`` at a time (2 s
deadline, 20 ms apart) on its own connection over the abused transport
(grpc.aio for h2, the runtime's ``H3Channel`` for h3): p50/p99 latency of the
answered ones and failures by status code, before and during the abuse.
``--baseline`` passes ``max_concurrent_streams/calls``, ``max_connections`` and
``max_buffered_bytes`` = None (main's behaviour). ``--cpu-hog`` runs
``python -c 'while True: pass'`` beside, stopped by its PID at the end.
Every process this harness starts is stopped by its PID on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.stats import describe, machine

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "generated"
sys.path.insert(0, str(GENERATED))  # the example Greeter (the server process gets PYTHONPATH)
MIB = 1024 * 1024
UNBOUNDED = (
    "max_concurrent_streams=None",
    "max_concurrent_calls=None",
    "max_connections=None",
    "max_buffered_bytes=None",
)

_CHILDREN: list[subprocess.Popen[bytes]] = []


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GENERATED), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, cwd=REPO, env=_env(), **kwargs)
    _CHILDREN.append(process)
    return process


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal one child of ours by PID (unless already reaped) and reap it."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                process.kill()
            process.wait()
    if process in _CHILDREN:
        _CHILDREN.remove(process)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP right now."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


# -- RSS ----------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with suppress(OSError, KeyError):
                self.samples.append((time.monotonic(), status_kib(self.pid, "VmRSS")))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def between(self, start: float, end: float) -> list[int]:
        return [kib for t, kib in self.samples if start <= t <= end]


# -- the probe ------------------------------------------------------------------------------


class Probe:
    """One small unary call at a time; latency of each answered call, codes of the rest."""

    def __init__(self, transport: str, port: int, ca: Path) -> None:
        self.transport, self.port, self.ca = transport, port, ca
        self.calls: list[tuple[float, float, str]] = []  # (start, latency, code)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        import grpc
        import grpc.aio
        from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

        from protoc_gen_localfirst.runtime.http3.client import H3Channel
        from protoc_gen_localfirst.runtime.tls import ClientTls

        channel: Any
        if self.transport == "h2":  # the server is on TLS (certfile): both transports
            credentials = grpc.ssl_channel_credentials(self.ca.read_bytes())
            channel = grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials)
        else:
            channel = H3Channel("127.0.0.1", self.port, tls=ClientTls(ca_file=str(self.ca)))
        say = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            HelloRequest.SerializeToString,
            HelloReply.FromString,
        )
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    await say(HelloRequest(name="probe"), timeout=2.0)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                self.calls.append((start, time.monotonic() - start, code))
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.02)
        finally:
            await channel.close()

    def stop(self) -> None:
        self._stop.set()

    def summary(self, start: float, end: float) -> dict[str, Any]:
        window = [(lat, code) for t, lat, code in self.calls if start <= t < end]
        ok = sorted(lat for lat, code in window if code == "OK")
        failed = collections.Counter(code for _, code in window if code != "OK")
        return {
            "calls": len(window),
            "ok": len(ok),
            "failed": dict(failed),
            "p50_ms": round(1000 * statistics.quantiles(ok, n=100)[49], 1) if len(ok) > 1 else None,
            "p99_ms": round(1000 * statistics.quantiles(ok, n=100)[98], 1) if len(ok) > 1 else None,
        }


# -- the abusers (run in their own process: python -m bench.memory_abuse abuse-h2 ...) -------


async def abuse_h2(args: argparse.Namespace) -> dict[str, Any]:
    import grpc
    import grpc.aio
    from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)]
    credentials = grpc.ssl_channel_credentials(Path(args.ca).read_bytes())
    channels = [
        grpc.aio.secure_channel(f"127.0.0.1:{args.port}", credentials, options=options)
        for _ in range(args.connections)
    ]
    request = HelloRequest(name="slow" + "x" * (args.size - 4))
    codes: collections.Counter[str] = collections.Counter()
    details: dict[str, str] = {}

    async def one(index: int) -> None:
        say = channels[index % len(channels)].unary_unary(
            "/greeter.v1.Greeter/SayHello", HelloRequest.SerializeToString, HelloReply.FromString
        )
        try:
            await say(request, timeout=args.duration + 30)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
            details.setdefault(error.code().name, error.details() or "")

    tasks = [asyncio.ensure_future(one(i)) for i in range(args.streams)]
    await asyncio.wait(tasks, timeout=args.duration)
    pending = sum(1 for task in tasks if not task.done())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "calls": args.streams,
        "ended": dict(codes),
        "still_running": pending,
        "details": details,
    }


async def abuse_h3(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib

    from greeter.v1.greeter_pb2 import HelloRequest

    from protoc_gen_localfirst.runtime.wire import encode_message
    from tests.http3.server.rawclient import RawClient, request_headers

    chunk = encode_message(HelloRequest(name="x" * (MIB - 16)).SerializeToString())
    end = time.monotonic() + args.duration
    sent = 0
    streams: list[tuple[RawClient, int]] = []
    progress: dict[tuple[int, int], int] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(RawClient.connect(args.port, Path(args.ca)))
            for _ in range(args.connections)
        ]
        for index, client in enumerate(clients):
            granted = min(args.streams, int(client.quic.max_concurrent_bidi_streams))
            for _ in range(granted):
                sid = client.stream()
                client.headers(sid, request_headers("/greeter.v1.Greeter/LotsOfGreetings"))
                streams.append((client, sid))
                progress[(index, sid)] = 0
        while time.monotonic() < end:
            busy = False
            for client, sid in streams:
                key = (clients.index(client), sid)
                response = client.protocol.response(sid)
                if response.done.is_set() or progress[key] >= args.size:
                    continue
                busy = True
                if client.quic.get_send_buffer_size(sid) < 256 * 1024:
                    client.data(sid, chunk)
                    progress[key] += len(chunk)
                    sent += len(chunk)
            await asyncio.sleep(0.005 if busy else 0.1)
        codes: collections.Counter[str] = collections.Counter()
        for client, sid in streams:
            response = client.protocol.response(sid)
            if response.done.is_set():
                codes[response.status.code.name] += 1
            else:
                codes["still_running"] += 1
                with suppress(Exception):
                    client.reset(sid)
    return {"streams": len(streams), "sent_mib": round(sent / MIB), "ended": dict(codes)}


def abuser_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["abuse-h2", "abuse-h3"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args(argv)
    run = abuse_h2 if args.kind == "abuse-h2" else abuse_h3
    print(json.dumps(asyncio.run(run(args))), flush=True)


# -- one scenario ---------------------------------------------------------------------------


def start_server(
    args: argparse.Namespace, port: int, tls: Any, serve_options: list[str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as log_file:
        return _spawn(
            [sys.executable, "-m", "bench.memory_server", "--port", str(port),
             "--certfile", str(tls.cert), "--keyfile", str(tls.key), "--slow", str(args.slow),
             *(f"--serve-option={option}" for option in serve_options)],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip


async def scenario(args: argparse.Namespace, kind: str, tls: Any) -> dict[str, Any]:
    port = free_port()
    serve_options = list(UNBOUNDED if args.baseline else ()) + list(args.serve_option or ())
    descriptor, name = tempfile.mkstemp(prefix=f"memory-{kind}-", suffix=".log")
    os.close(descriptor)
    log = Path(name)
    server = start_server(args, port, tls, serve_options, log)
    try:
        probe = Probe(kind, port, tls.ca)
        deadline = time.monotonic() + 30
        probing = asyncio.ensure_future(probe.run())
        while not any(code == "OK" for _, _, code in probe.calls):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")
            await asyncio.sleep(0.05)
        sampler = RssSampler(server.pid)
        sampler.start()
        quiet_start = time.monotonic()
        await asyncio.sleep(args.quiet)
        abuse_start = time.monotonic()
        if kind == "h2":
            abuse = ["abuse-h2", "--connections", str(args.h2_connections),
                     "--streams", str(args.h2_streams), "--size", str(args.h2_size),
                     "--ca", str(tls.ca)]  # fmt: skip
        else:
            abuse = ["abuse-h3", "--connections", str(args.h3_connections),
                     "--streams", "100", "--size", str(args.h3_size), "--ca", str(tls.ca)]  # fmt: skip
        abuser = _spawn(
            [sys.executable, "-m", "bench.memory_abuse", *abuse, "--port", str(port),
             "--duration", str(args.duration)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.to_thread(abuser.communicate)
        _CHILDREN.remove(abuser)
        abuse_end = time.monotonic()
        probe.stop()
        await probing
        sampler.stop()
        hwm = status_kib(server.pid, "VmHWM")
        before = statistics.median(sampler.between(quiet_start, abuse_start)) / 1024
        during = sampler.between(abuse_start, abuse_end)
        peak = max(during) / 1024
        return {
            "scenario": kind,
            "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(peak, 1),
            "rss_growth_mb": round(peak - before, 1),
            "vmhwm_mb": round(hwm / 1024, 1),
            "rss_end_mb": round(during[-1] / 1024, 1),
            "probe_before": probe.summary(quiet_start, abuse_start),
            "probe_during": probe.summary(abuse_start, abuse_end),
            "abuser": json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else None,
        }
    finally:
        _stop(server)
        log.unlink(missing_ok=True)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    print(
        "| scenario | RSS before | RSS peak | growth | probe ok/calls | probe p50 | probe p99 "
        "| probe failures | abuse outcome |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        during = row["probe_during"]
        failures = ", ".join(f"{k} {v}" for k, v in during["failed"].items()) or "0"
        abuser = row["abuser"] or {}
        ended = [f"{k} {v}" for k, v in (abuser.get("ended") or {}).items()]
        if abuser.get("still_running"):
            ended.append(f"still running {abuser['still_running']}")
        outcome = ", ".join(ended)
        print(
            f"| {row['scenario']} | {row['rss_before_mb']} MB | {row['rss_peak_mb']} MB "
            f"| **{row['rss_growth_mb']} MB** | {during['ok']}/{during['calls']} "
            f"| {during['p50_ms']} ms | {during['p99_ms']} ms | {failures} | {outcome} |"
        )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests.support.certs import make_tls_files

    hog: subprocess.Popen[bytes] | None = None
    if args.cpu_hog:
        hog = _spawn([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as directory:
            tls = make_tls_files(directory)
            return [await scenario(args, kind, tls) for kind in args.scenario]
    finally:
        if hog is not None:
            _stop(hog, signal.SIGKILL)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("abuse-"):
        abuser_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=["h2", "h3"])
    parser.add_argument("--baseline", action="store_true", help="every memory bound off")
    parser.add_argument("--cpu-hog", action="store_true", help="beside a CPU-bound process")
    parser.add_argument("--serve-option", action="append", metavar="KEY=VALUE")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of abuse")
    parser.add_argument("--quiet", type=float, default=1.0, help="seconds measured before")
    parser.add_argument("--slow", type=float, default=10.0, help="seconds a slow call holds")
    parser.add_argument("--h2-streams", type=int, default=1000)
    parser.add_argument("--h2-size", type=int, default=MIB)
    parser.add_argument("--h2-connections", type=int, default=1)
    parser.add_argument("--h3-connections", type=int, default=3)
    parser.add_argument("--h3-size", type=int, default=16 * MIB)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.scenario = args.scenario or ["h2", "h3"]
    try:
        rows = asyncio.run(main_async(args))
    finally:
        while _CHILDREN:
            _stop(_CHILDREN[-1], signal.SIGKILL)
    title = (
        f"{'baseline (bounds off)' if args.baseline else 'serve() defaults'}"
        f"{' beside a CPU hog' if args.cpu_hog else ''}; {describe(machine())}"
    )
    print_table(rows, title)
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
