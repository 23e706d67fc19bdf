"""One replica of the example Greeter service, served by the generated bootstrap.

    python -m demo.replica --host 127.0.0.21 --port 50051 --node node-a --name greeter-a1

``--certfile tls.crt --keyfile tls.key`` puts it on TLS; ``--http3`` (needs
them) also serves HTTP/3 (QUIC) on the same port number, over UDP;
``--client-ca-file ca.crt`` requires client certificates (mTLS, HTTP/2 only).

In a pod every flag has a default: 0.0.0.0:50051, node from $NODE_NAME and
name from $POD_NAME (Downward API), the bootstrap's drain timing.

``--capacity 4 --work-ms 20`` makes SayHello hold an ``asyncio.Semaphore(4)``
around 20 ms of work (``asyncio.sleep``): at most 200 calls/s, the excess
queues inside the server. ``--admission 6`` is ``serve(admission=6)``: a
seventh call in flight is refused at once, unprocessed, with its load report.
By default there is no limit and no work.

The generated module (``greeter.v1.greeter_localfirst``) must be importable:
put the directory protoc wrote into on PYTHONPATH. Tests and the demo start
several of these as stand-ins for pods on different Kubernetes nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator

from greeter.v1.greeter_localfirst import GreeterServicer, serve
from greeter.v1.greeter_pb2 import (
    HelloReply,
    HelloRequest,
    SetGreetingRequest,
    WhoAmIRequest,
)

from protoc_gen_localfirst.runtime import ServeOptions, ServicerContext


class Greeter(GreeterServicer):
    """Greets callers and signs every reply with this replica's node and name."""

    def __init__(
        self,
        node: str,
        replica: str,
        *,
        executions_file: str | None = None,
        handler_delay: float = 0.0,
        capacity: int | None = None,
        work: float = 0.0,
    ) -> None:
        self.node = node
        self.replica = replica
        self.greeting = "Hello, {name}!"
        self.handler_delay = handler_delay
        self.work = work
        self._capacity = asyncio.Semaphore(capacity) if capacity else None
        # One O_APPEND write per execution, straight to the kernel: a line
        # survives SIGKILL the moment the handler has run.
        self._executions = (
            os.open(executions_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if executions_file
            else None
        )

    def _executed(self, method: str, request_id: str) -> None:
        """Record that ``method`` ran for ``request_id`` (chaos tests count duplicates)."""
        if self._executions is not None:
            os.write(self._executions, f"{method} {request_id}\n".encode())

    def _reply(self, name: str) -> HelloReply:
        return HelloReply(
            message=self.greeting.format(name=name), node=self.node, replica=self.replica
        )

    async def SayHello(
        self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        self._executed("SayHello", request.name)
        if self.handler_delay:
            await asyncio.sleep(self.handler_delay)
        if self._capacity is not None:
            async with self._capacity:
                await asyncio.sleep(self.work)
        elif self.work:
            await asyncio.sleep(self.work)
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
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument(
        "--health-port",
        type=int,
        help="also serve health checks in plaintext on this port (kubelet's grpc probes)",
    )
    parser.add_argument(
        "--node", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME (Downward API)"
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="replica name in replies; default: $POD_NAME, else the hostname",
    )
    parser.add_argument("--drain-delay", type=float, help="seconds NOT_SERVING before stopping")
    parser.add_argument("--grace", type=float, help="seconds in-flight calls get when stopping")
    parser.add_argument(
        "--http3", action="store_true", help="also serve HTTP/3 (UDP, same port); needs TLS files"
    )
    parser.add_argument(
        "--certfile",
        help="PEM certificate chain, leaf first: TLS on every listener (re-read when it changes)",
    )
    parser.add_argument("--keyfile", help="PEM private key of --certfile (unencrypted)")
    parser.add_argument(
        "--client-ca-file",
        help="PEM CA certificates: require client certificates they sign (mTLS; HTTP/2 only)",
    )
    parser.add_argument(
        "--quic-library", choices=("qh3", "aioquic"), default="qh3", help="QUIC stack for HTTP/3"
    )
    parser.add_argument(
        "--executions-file",
        "--count-executions-file",
        help="append 'SayHello <request name>' per executed SayHello (duplicate counting)",
    )
    parser.add_argument(
        "--handler-delay",
        type=float,
        default=0.0,
        help="seconds SayHello works (after recording its execution) before replying",
    )
    parser.add_argument(
        "--capacity", type=int, help="SayHello calls working at once (default: no limit)"
    )
    parser.add_argument(
        "--work-ms", type=float, default=0.0, help="milliseconds one SayHello works (default 0)"
    )
    parser.add_argument(
        "--admission", type=int, help="serve(admission=N): refuse calls over N in flight"
    )
    parser.add_argument(
        "--max-concurrent-streams",
        type=int,
        help="serve(max_concurrent_streams=N): request streams per connection (default 32)",
    )
    args = parser.parse_args()
    if args.capacity is not None and args.capacity < 1:
        parser.error("--capacity must be at least 1")
    logging.basicConfig(level=logging.INFO, format=f"[{args.name}] %(message)s")
    node = args.node or socket.gethostname()
    options: ServeOptions = {"host": args.host, "port": args.port, "node": node}
    if args.drain_delay is not None:
        options["drain_delay"] = args.drain_delay
    if args.grace is not None:
        options["grace"] = args.grace
    # Passed only when given; serve() checks the combinations (a key without
    # a certificate, client CAs with HTTP/3, ...) and says what is wrong.
    if args.certfile is not None:
        options["certfile"] = args.certfile
    if args.keyfile is not None:
        options["keyfile"] = args.keyfile
    if args.client_ca_file is not None:
        options["client_ca_file"] = args.client_ca_file
    if args.health_port is not None:
        options["health_port"] = args.health_port
    if args.http3:
        if not (args.certfile and args.keyfile):
            parser.error("--http3 needs --certfile and --keyfile (QUIC always uses TLS)")
        options["http3"] = True
        options["quic_library"] = args.quic_library
    if args.admission is not None:
        options["admission"] = args.admission
    if args.max_concurrent_streams is not None:
        options["max_concurrent_streams"] = args.max_concurrent_streams
    greeter = Greeter(
        node,
        args.name,
        executions_file=args.executions_file,
        handler_delay=args.handler_delay,
        capacity=args.capacity,
        work=args.work_ms / 1000,
    )
    asyncio.run(serve(greeter, **options))


if __name__ == "__main__":
    main()
