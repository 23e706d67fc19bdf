"""A user-space TCP relay that adds a fixed delay per direction (netem stand-in).

    python -m demo.relay --delay-ms 1 127.0.0.92:50051=127.0.0.82:50051 127.0.0.93:50051=...

Each ``LISTEN=UPSTREAM`` route accepts connections on LISTEN and relays them
to UPSTREAM. Every chunk read in either direction is written to the other side
``delay`` seconds after it was read, in order and without limiting throughput
(chunks in flight queue up, as on a long link), so a request/response round trip
through the relay costs at least ``2 * delay`` more than a direct one. The
benchmarks put it in front of "remote" replicas to simulate cross-node latency;
this machine's kernel has no netem.

asyncio timers have about millisecond resolution: a 1 ms delay costs 1-2 ms
per direction in practice. Measure the relay's real cost (the benchmark does)
rather than trusting the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Sequence


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            try:
                chunk = await reader.read(65536)
            except OSError:
                chunk = b""
            queue.put_nowait((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await delivering
    except (OSError, asyncio.CancelledError):
        delivering.cancel()
        raise


class Relay:
    """One listening route: LISTEN host:port -> UPSTREAM host:port, ``delay`` s each way."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], delay: float) -> None:
        self.listen = listen
        self.upstream = upstream
        self.delay = delay
        self._server: asyncio.Server | None = None

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, *self.listen, reuse_address=True)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()  # upstream down: the caller sees the connection close
            return
        for w in (client_w, up_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                _pump(client_r, up_w, self.delay), _pump(up_r, client_w, self.delay)
            )
        except (OSError, asyncio.CancelledError):
            pass  # a side went away, or the relay is shutting down: close both
        finally:
            for w in (client_w, up_w):
                w.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def run(routes: Sequence[tuple[str, str]], delay: float) -> None:
    relays = [await Relay(_address(a), _address(b), delay).start() for a, b in routes]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("relaying", flush=True)  # the parent waits for this line
    await stop.wait()
    for relay in relays:
        await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=1.0, help="delay per direction")
    parser.add_argument("routes", nargs="+", metavar="LISTEN=UPSTREAM")
    args = parser.parse_args()
    routes = [tuple(r.split("=", 1)) for r in args.routes]
    asyncio.run(run([(a, b) for a, b in routes], args.delay_ms / 1000))


if __name__ == "__main__":
    main()
