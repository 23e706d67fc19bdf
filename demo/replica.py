"""One replica of the example Greeter service, served by the generated bootstrap.

    python -m demo.replica --host 127.0.0.21 --port 50051 --node node-a --name greeter-a1

The generated module (``greeter.v1.greeter_localfirst``) must be importable:
put the directory protoc wrote into on PYTHONPATH. Tests and the demo start
several of these as stand-ins for pods on different Kubernetes nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator

from greeter.v1.greeter_localfirst import GreeterServicer, serve
from greeter.v1.greeter_pb2 import (
    HelloReply,
    HelloRequest,
    SetGreetingRequest,
    WhoAmIRequest,
)

from protoc_gen_localfirst.runtime import ServicerContext


class Greeter(GreeterServicer):
    """Greets callers and signs every reply with this replica's node and name."""

    def __init__(self, node: str, replica: str) -> None:
        self.node = node
        self.replica = replica
        self.greeting = "Hello, {name}!"

    def _reply(self, name: str) -> HelloReply:
        return HelloReply(
            message=self.greeting.format(name=name), node=self.node, replica=self.replica
        )

    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        return self._reply(request.name)

    async def LotsOfReplies(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> AsyncIterator[HelloReply]:
        count = request.count if request.HasField("count") else 1
        for _ in range(count):
            yield self._reply(request.name)

    async def LotsOfGreetings(
        self,
        request_iterator: AsyncIterator[HelloRequest],
        context: ServicerContext[HelloRequest, HelloReply],
    ) -> HelloReply:
        names = [request.name async for request in request_iterator]
        return self._reply(" and ".join(names))

    async def BidiHello(
        self,
        request_iterator: AsyncIterator[HelloRequest],
        context: ServicerContext[HelloRequest, HelloReply],
    ) -> AsyncIterator[HelloReply]:
        async for request in request_iterator:
            yield self._reply(request.name)

    async def WhoAmI(
        self, request: WhoAmIRequest, context: ServicerContext[WhoAmIRequest, HelloReply]
    ) -> HelloReply:
        return self._reply(self.replica)

    async def SetGreeting(
        self,
        request: SetGreetingRequest,
        context: ServicerContext[SetGreetingRequest, HelloReply],
    ) -> HelloReply:
        self.greeting = request.greeting
        return self._reply("you")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--drain-delay", type=float, default=0.5)
    parser.add_argument("--grace", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{args.name}] %(message)s")
    asyncio.run(
        serve(
            Greeter(args.node, args.name),
            host=args.host,
            port=args.port,
            node=args.node,
            drain_delay=args.drain_delay,
            grace=args.grace,
        )
    )


if __name__ == "__main__":
    main()
