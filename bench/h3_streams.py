"""HTTP/3 streaming throughput: our client + server against qh3 alone, on loopback.

    python -m bench.h3_streams                 # 64 MiB each way, 3 rounds
    python -m bench.h3_streams --mib 32 --repeats 5

Two server processes run on this machine, each on its own UDP port:

* ``qh3 alone`` (the baseline): a minimal qh3 HTTP/3 server. ``/down`` answers
  N MiB of DATA in 1 MiB writes, ``/up`` reads the request body to its end and
  answers its length. Its client is a minimal qh3 HTTP/3 client. Both sides
  write 1 MiB at a time and wait while more than 1 MiB is queued on the stream
  (woken by qh3's ``transmit``): the least flow control any application needs.
  Its sockets get the UDP buffers ours ask for (``http3.udp``, 4 MiB each
  way): with the kernel's default 208 KiB every stack loses datagrams of a
  burst, and the comparison would be of kernel settings.
* ``qh3 alone, batching listener``: the same server listening through
  ``quiclib.serve_batched`` (qh3's recvmmsg/GSO transport, datagrams handed
  over in batches), as our server does: the fair baseline for it.
* ``localfirst h3``: our HTTP/3 server (``start_server(http3=True)``) with a
  Greeter whose ``LotsOfReplies`` streams ``count`` replies of 1 MiB and whose
  ``LotsOfGreetings`` counts the bytes of the names it receives; the client is
  ``H3Channel`` (the HTTP/3 transport under ``AsyncClient``), downloading with
  ``LotsOfReplies`` and uploading N requests of 1 MiB with ``LotsOfGreetings``.

Rounds interleave the variants on one warmed-up connection each; the table
gives the median MB/s (10^6 bytes) over rounds and the ratio to qh3 alone on
the batching listener (the higher of the two baselines here): the median of
each round's own ratio, so slow drifts of a shared machine cancel out. A second table
gives the CPU each side spent per MB moved (this process: ``process_time``;
the server process: ``/proc/PID/stat``): on 2 shared cores MB/s moves with
whatever else runs, CPU per MB much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.stats import describe, machine

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"
sys.path.insert(0, str(GENERATED))

MIB = 1 << 20
HOST = "127.0.0.1"
CHUNK = MIB
"""Bytes the qh3-alone sides write at a time, and queue at most before waiting."""
BATCHED = "qh3 alone, batching listener"


# ---------------------------------------------------------------------------
# qh3 alone


def _qh3_protocol_class() -> Any:
    from qh3.asyncio.protocol import QuicConnectionProtocol
    from qh3.h3.connection import H3Connection
    from qh3.h3.events import DataReceived, HeadersReceived
    from qh3.quic.events import ProtocolNegotiated

    class Qh3Alone(QuicConnectionProtocol):  # type: ignore[misc]
        """Both sides of the baseline: an HTTP/3 connection moving bytes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.h3: Any = None
            self.sent = asyncio.Event()
            self.received: dict[int, int] = {}
            self.ended: dict[int, asyncio.Future[int]] = {}
            self.requests: dict[int, str] = {}
            if self._quic.configuration.is_client:
                self.h3 = H3Connection(self._quic)

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, ProtocolNegotiated) and self.h3 is None:
                self.h3 = H3Connection(self._quic)
            if self.h3 is None:
                return
            for h3_event in self.h3.handle_event(event):
                sid = h3_event.stream_id if hasattr(h3_event, "stream_id") else None
                if isinstance(h3_event, HeadersReceived):
                    headers = dict(h3_event.headers)
                    if b":path" in headers:  # a request (server side)
                        self.requests[sid] = headers[b":path"].decode()
                        self.received[sid] = 0
                        if headers[b":path"].startswith(b"/down/"):
                            asyncio.ensure_future(self.answer_down(sid))
                    if h3_event.stream_ended:
                        self._stream_ended(sid)
                elif isinstance(h3_event, DataReceived):
                    self.received[sid] = self.received.get(sid, 0) + len(h3_event.data)
                    if h3_event.stream_ended:
                        self._stream_ended(sid)

        def _stream_ended(self, sid: int) -> None:
            if self.requests.get(sid, "").startswith("/up"):
                size = str(self.received.pop(sid)).encode()
                self.h3.send_headers(sid, [(b":status", b"200")])
                self.h3.send_data(sid, size, end_stream=True)
                self.transmit()
            future = self.ended.get(sid)
            if future is not None and not future.done():
                future.set_result(self.received.pop(sid, 0))
            else:
                self.received.pop(sid, None)

        def transmit(self) -> None:
            super().transmit()
            self.sent.set()

        async def write(self, sid: int, total: int) -> None:
            payload = b"x" * CHUNK
            left = total
            while left > 0:
                while self._quic.get_send_buffer_size(sid) > CHUNK:
                    self.sent.clear()
                    await self.sent.wait()
                piece = payload[: min(left, CHUNK)]
                left -= len(piece)
                self.h3.send_data(sid, piece, end_stream=left == 0)
                self.transmit()

        async def answer_down(self, sid: int) -> None:
            self.h3.send_headers(sid, [(b":status", b"200")])
            await self.write(sid, int(self.requests[sid].rsplit("/", 1)[1]))

        async def request(self, path: str, upload: int) -> int:
            """Client: one request; the response body's length (download) or the count (upload)."""
            sid = self._quic.get_next_available_stream_id()
            ended = self.ended[sid] = asyncio.get_running_loop().create_future()
            headers = [
                (b":method", b"POST"),
                (b":scheme", b"https"),
                (b":authority", b"bench"),
                (b":path", path.encode()),
            ]
            self.h3.send_headers(sid, headers, end_stream=upload == 0)
            self.transmit()
            if upload:
                await self.write(sid, upload)
            try:
                return await ended
            finally:
                del self.ended[sid]

    return Qh3Alone


def _same_buffers(transport: Any) -> None:
    """The UDP buffers our sockets ask for (``http3.udp``), on the baseline's sockets
    too: the comparison is between QUIC stacks, not kernel settings."""
    from protoc_gen_localfirst.runtime.http3.udp import size_buffers

    size_buffers(transport.get_extra_info("socket"))


async def serve_qh3(port: int, cert: str, key: str, *, batched: bool = False) -> None:
    from qh3.asyncio import serve as qh3_serve
    from qh3.h3.connection import H3_ALPN
    from qh3.quic.configuration import QuicConfiguration

    # qh3 announces SETTINGS_H3_DATAGRAM; its client then wants the transport parameter too.
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    configuration.load_cert_chain(cert, key)
    serve = qh3_serve
    if batched:
        from protoc_gen_localfirst.runtime.http3.quiclib import serve_batched as serve
    server = await serve(
        HOST, port, configuration=configuration, create_protocol=_qh3_protocol_class()
    )
    _same_buffers(server._transport)
    print(port, flush=True)
    await asyncio.Event().wait()


async def qh3_client(port: int, ca: str) -> tuple[Any, Callable[[], None]]:
    from qh3.asyncio import connect
    from qh3.h3.connection import H3_ALPN
    from qh3.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=HOST)
    configuration.load_verify_locations(cafile=ca)
    manager = connect(
        HOST, port, configuration=configuration, create_protocol=_qh3_protocol_class()
    )
    protocol = await manager.__aenter__()
    _same_buffers(protocol._transport)

    protocol.manager = manager  # collecting the context manager would close the connection

    def close() -> None:
        protocol.close()

    return protocol, close


# ---------------------------------------------------------------------------
# localfirst h3


async def serve_localfirst(port: int, cert: str, key: str) -> None:
    from greeter.v1 import greeter_localfirst, greeter_pb2

    class Greeter(greeter_localfirst.GreeterServicer):
        async def LotsOfReplies(self, request: Any, context: Any) -> AsyncIterator[Any]:
            reply = greeter_pb2.HelloReply(message=request.name)
            for _ in range(request.count):
                yield reply

        async def LotsOfGreetings(self, request_iterator: Any, context: Any) -> Any:
            total = 0
            async for request in request_iterator:
                total += len(request.name)
            return greeter_pb2.HelloReply(message=str(total))

    server = await greeter_localfirst.start_server(
        Greeter(), host=HOST, port=port, certfile=cert, keyfile=key, http3=True,
        node="bench", drain_delay=0.0, grace=0.5,
    )  # fmt: skip
    print(server.port, flush=True)
    await asyncio.Event().wait()


async def localfirst_client(port: int, ca: str) -> tuple[Any, Any]:
    from greeter.v1 import greeter_pb2

    from protoc_gen_localfirst.runtime.http3.channel import H3Channel
    from protoc_gen_localfirst.runtime.tls import ClientTls

    channel = H3Channel(HOST, port, tls=ClientTls(ca_file=ca))
    down = channel.unary_stream(
        "/greeter.v1.Greeter/LotsOfReplies",
        request_serializer=greeter_pb2.HelloRequest.SerializeToString,
        response_deserializer=greeter_pb2.HelloReply.FromString,
    )
    up = channel.stream_unary(
        "/greeter.v1.Greeter/LotsOfGreetings",
        request_serializer=greeter_pb2.HelloRequest.SerializeToString,
        response_deserializer=greeter_pb2.HelloReply.FromString,
    )
    return channel, (down, up, greeter_pb2)


# ---------------------------------------------------------------------------
# the run


def _spawn(kind: str, port: int, tls: Any, tmp: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(GENERATED), env.get("PYTHONPATH", "")])
    log = (tmp / f"{kind}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bench.h3_streams", "--serve", kind, "--port", str(port),
         "--cert", str(tls.cert), "--key", str(tls.key)],
        env=env, stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip


def _free_udp_tcp_port() -> int:
    import socket

    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind((HOST, 0))
        port = int(tcp.getsockname()[1])
        udp.bind((HOST, port))
    return port


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(
    what: Callable[[], Awaitable[int]], expected: int, server_pid: int
) -> tuple[float, float, float]:
    """MB/s, and the client's and the server's CPU milliseconds per MB moved."""
    cpu, server_cpu = time.process_time(), process_cpu(server_pid)
    started = time.perf_counter()
    moved = await what()
    elapsed = time.perf_counter() - started
    cpu, server_cpu = time.process_time() - cpu, process_cpu(server_pid) - server_cpu
    assert moved >= expected, (moved, expected)
    mb = moved / 1e6
    return mb / elapsed, cpu * 1e3 / mb, server_cpu * 1e3 / mb


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from tests.support.certs import make_tls_files

    total = args.mib * MIB
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tls = make_tls_files(tmp / "tls")
        kinds = ("qh3", "qh3-batched", "localfirst")
        ports = [_free_udp_tcp_port() for _ in kinds]
        servers = [_spawn(kind, port, tls, tmp) for kind, port in zip(kinds, ports, strict=True)]
        qh3_port, batched_port, lf_port = ports
        try:
            for server, kind in zip(servers, kinds, strict=True):
                assert server.stdout is not None
                if not await asyncio.to_thread(server.stdout.readline):  # its port: serving
                    raise RuntimeError((tmp / f"{kind}.log").read_text())
            qh3, close_qh3 = await qh3_client(qh3_port, str(tls.ca))
            batched, close_batched = await qh3_client(batched_port, str(tls.ca))
            channel, (down, up, pb2) = await localfirst_client(lf_port, str(tls.ca))
            big = pb2.HelloRequest(name="x" * MIB, count=args.mib)

            async def lf_down() -> int:
                received = 0
                async for reply in down(big, timeout=120):
                    received += len(reply.message)
                return received

            async def lf_up() -> int:
                one = pb2.HelloRequest(name="x" * MIB)

                def requests() -> Any:
                    for _ in range(args.mib):
                        yield one

                reply = await up(requests(), timeout=120)
                return int(reply.message)

            def qh3_down(protocol: Any) -> Callable[[], Awaitable[int]]:
                async def download() -> int:
                    return int(await protocol.request(f"/down/{total}", 0))

                return download

            def qh3_up(protocol: Any) -> Callable[[], Awaitable[int]]:
                async def upload() -> int:
                    await protocol.request("/up", total)
                    return total

                return upload

            variants = {
                ("qh3 alone", "download"): qh3_down(qh3),
                ("qh3 alone", "upload"): qh3_up(qh3),
                (BATCHED, "download"): qh3_down(batched),
                (BATCHED, "upload"): qh3_up(batched),
                ("localfirst h3", "download"): lf_down,
                ("localfirst h3", "upload"): lf_up,
            }
            for what in variants.values():  # warm-up: connections, handshakes, code paths
                await what()
            pids = {"qh3 alone": servers[0].pid, BATCHED: servers[1].pid}
            rates: dict[tuple[str, str], list[tuple[float, float, float]]] = {
                key: [] for key in variants
            }
            for _ in range(args.repeats):
                for key, what in variants.items():
                    pid = pids.get(key[0], servers[2].pid)
                    rates[key].append(await timed(what, total, pid))
            await channel.close()
            close_qh3()
            close_batched()
        finally:
            for server in servers:
                server.terminate()
                server.wait(5)
    results: dict[str, dict[str, float]] = {}
    for (variant, direction), values in rates.items():
        medians = [statistics.median(v[i] for v in values) for i in range(3)]
        results.setdefault(variant, {})[direction] = medians[0]
        results[variant][f"{direction} client cpu"] = medians[1]
        results[variant][f"{direction} server cpu"] = medians[2]
        # Each round's rate over the baseline's in the same round, then the median:
        # drifts of a shared machine (seconds long) cancel out.
        base = rates[(BATCHED, direction)]
        results[variant][f"{direction} ratio"] = statistics.median(
            v[0] / b[0] for v, b in zip(values, base, strict=True)
        )
    return results


def table(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"HTTP/3 streaming, {args.mib} MiB each way in 1 MiB messages, "
        + f"median of {args.repeats} rounds",
        "| variant | download MB/s | ratio | upload MB/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['download']:.0f} | {r['download ratio']:.2f} "
            f"| {r['upload']:.0f} | {r['upload ratio']:.2f} |"
        )
    lines += [
        "",
        "CPU milliseconds per MB moved (median), client / server process:",
        "| variant | download | upload |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['download client cpu']:.2f} / {r['download server cpu']:.2f} "
            f"| {r['upload client cpu']:.2f} / {r['upload server cpu']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per transfer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--serve", choices=["qh3", "qh3-batched", "localfirst"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "qh3":
        asyncio.run(serve_qh3(args.port, args.cert, args.key))
    elif args.serve == "qh3-batched":
        asyncio.run(serve_qh3(args.port, args.cert, args.key, batched=True))
    elif args.serve == "localfirst":
        asyncio.run(serve_localfirst(args.port, args.cert, args.key))
    else:
        print("machine: " + describe(machine()))
        print(table(asyncio.run(run(args)), args))


if __name__ == "__main__":
    main()
