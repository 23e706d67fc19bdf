"""The server under test of bench/memory_abuse.py: the example Greeter with slow calls.

    python -m bench.memory_server --port 50051 --certfile cert.pem --keyfile key.pem \\
        [--slow 10] [--serve-option KEY=VALUE ...]

``serve()`` with its defaults (HTTP/2 and HTTP/3 on one port number, 127.0.0.1)
plus any ``--serve-option`` (see bench/hotspot_replica.py for the values).
``SayHello`` answers at once, except for a name starting with ``slow``: then it
works ``--slow`` seconds first (holding its request, as a slow handler does).
``LotsOfGreetings`` waits ``--slow`` seconds before reading its request
stream (request bytes pile up in the server meanwhile), then reads it all.
Replies are small either way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from bench.hotspot_replica import parse_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--slow", type=float, default=10.0, help="seconds a slow call works")
    parser.add_argument("--serve-option", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[server] %(message)s")

    # Imported after parsing: the generated package comes from PYTHONPATH.
    from greeter.v1.greeter_localfirst import GreeterServicer, serve
    from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

    from protoc_gen_localfirst.runtime import ServicerContext

    class SlowGreeter(GreeterServicer):
        async def SayHello(
            self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
        ) -> HelloReply:
            if request.name.startswith("slow"):
                await asyncio.sleep(args.slow)
            return HelloReply(message=f"hello ({len(request.name)} bytes)")

        async def LotsOfGreetings(
            self,
            request_iterator: AsyncIterator[HelloRequest],
            context: ServicerContext[HelloRequest, HelloReply],
        ) -> HelloReply:
            await asyncio.sleep(args.slow)
            size = sum([len(request.name) async for request in request_iterator])
            return HelloReply(message=f"read {size} bytes")

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "node": "bench",
        "http3": True,
        "certfile": args.certfile,
        "keyfile": args.keyfile,
        "drain_delay": 0.0,
        "grace": 0.5,
    }
    options.update(parse_options(args.serve_option, "--serve-option"))
    asyncio.run(serve(SlowGreeter(), **options))


if __name__ == "__main__":
    main()
