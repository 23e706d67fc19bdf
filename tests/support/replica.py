"""One replica of the example Greeter for tests, served by the generated bootstrap.

    python -m tests.support.replica --host 127.0.0.21 --port 50051 --node node-a --name a1

Started by :class:`tests.support.cluster.ReplicaProcess` (with ``generated/``
and the repository on PYTHONPATH) as a stand-in for a pod on a Kubernetes
node. Every reply names this replica's node and name. ``--http3`` with TLS
files also serves HTTP/3 on the same port number (UDP).
``--executions-file`` appends one line per executed SayHello, so a test can
count duplicates of a non-idempotent call across replicas;
``--handler-delay`` makes SayHello work that long after recording it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator

from greeter.v1.greeter_localfirst import GreeterServicer, serve
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest, SetGreetingRequest, WhoAmIRequest

from protoc_gen_localfirst.runtime import ServeOptions, ServicerContext


class Greeter(GreeterServicer):
    """Greets callers and signs every reply with this replica's node and name."""

    def __init__(
        self, node: str, replica: str, *, executions_file: str | None, handler_delay: float
    ) -> None:
        self.node = node
        self.replica = replica
        self.greeting = "Hello, {name}!"
        self.handler_delay = handler_delay
        # One O_APPEND write per execution, straight to the kernel: a line
        # survives SIGKILL the moment the handler has run.
        self._executions = (
            os.open(executions_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if executions_file
            else None
        )

    def _reply(self, name: str) -> HelloReply:
        return HelloReply(
            message=self.greeting.format(name=name), node=self.node, replica=self.replica
        )

    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        if self._executions is not None:
            os.write(self._executions, f"SayHello {request.name}\n".encode())
        if self.handler_delay:
            await asyncio.sleep(self.handler_delay)
        return self._reply(request.name)

    async def LotsOfReplies(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> AsyncIterator[HelloReply]:
        for _ in range(request.count if request.HasField("count") else 1):
            yield self._reply(request.name)

    async def LotsOfGreetings(
        self,
        request_iterator: AsyncIterator[HelloRequest],
        context: ServicerContext[HelloRequest, HelloReply],
    ) -> HelloReply:
        return self._reply(" and ".join([request.name async for request in request_iterator]))

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
    parser.add_argument("--name", required=True, help="replica name in replies")
    parser.add_argument("--drain-delay", type=float, help="seconds NOT_SERVING before stopping")
    parser.add_argument("--grace", type=float, help="seconds in-flight calls get when stopping")
    parser.add_argument("--http3", action="store_true", help="also serve HTTP/3 (needs TLS files)")
    parser.add_argument("--certfile", help="PEM certificate chain (leaf first): TLS on both")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    parser.add_argument("--executions-file", help="append 'SayHello <name>' per executed SayHello")
    parser.add_argument("--handler-delay", type=float, default=0.0, help="seconds SayHello works")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{args.name}] %(message)s")
    options: ServeOptions = {"host": args.host, "port": args.port, "node": args.node}
    if args.drain_delay is not None:
        options["drain_delay"] = args.drain_delay
    if args.grace is not None:
        options["grace"] = args.grace
    if args.certfile or args.keyfile:
        options["certfile"] = args.certfile
        options["keyfile"] = args.keyfile
    options["http3"] = args.http3
    greeter = Greeter(
        args.node, args.name, executions_file=args.executions_file, handler_delay=args.handler_delay
    )
    asyncio.run(serve(greeter, **options))


if __name__ == "__main__":
    main()
