"""An in-process echo service on real grpc.aio servers, for client tests.

Each ``Replica`` runs its own grpc.aio server on its own event loop in a thread,
so both the asyncio and the blocking client can call it. Behaviour is set per
replica: fail the next N calls with UNAVAILABLE (or another code, with a
pushback trailer) before responding, fail with an application error, fail
after the response headers were sent, or answer slowly (a frozen replica).
Calls, their metadata and completed executions are recorded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.schema import MethodInfo, MethodKind, ServiceInfo


def _method(name: str, kind: MethodKind) -> MethodInfo[StringValue, StringValue]:
    return MethodInfo("test.Echo", name, kind, StringValue, StringValue)


UNARY = _method("Unary", MethodKind.UNARY_UNARY)
SERVER_STREAM = _method("ServerStream", MethodKind.UNARY_STREAM)
CLIENT_STREAM = _method("ClientStream", MethodKind.STREAM_UNARY)
BIDI = _method("Bidi", MethodKind.STREAM_STREAM)
ECHO = ServiceInfo("test.Echo", (UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI))


@dataclass
class Behaviour:
    unavailable_next: int = 0
    """Fail this many coming calls with UNAVAILABLE before any response."""
    app_error: bool = False
    """Fail every call with INVALID_ARGUMENT (an answer of the service)."""
    unavailable_after_headers: bool = False
    """Send response headers, then fail with UNAVAILABLE (a committed call)."""
    delay: float = 0.0
    """Seconds a unary call takes before it answers (a frozen replica: large)."""
    fail_next: int = 0
    """Fail this many coming calls with ``fail_code`` before any response."""
    fail_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED
    pushback: str | None = None
    """``grpc-retry-pushback-ms`` trailer value sent with ``fail_next`` failures."""
    executions: int = 0
    """Calls whose handler ran to the end (answered OK, not cancelled)."""
    metadata: list[dict[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    received: list[list[str]] = field(default_factory=list)


class Replica:
    def __init__(self, host: str, node: str, port: int = 0) -> None:
        self.host = host
        self.node = node
        self.port = port
        self.behaviour = Behaviour()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None

    @property
    def static(self) -> str:
        return f"{self.host}:{self.port}@{self.node}"

    def start(self) -> Replica:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
            self._server = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        server = grpc.aio.server()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(
                self._unary, StringValue.FromString, StringValue.SerializeToString
            ),
            "ServerStream": grpc.unary_stream_rpc_method_handler(
                self._server_stream, StringValue.FromString, StringValue.SerializeToString
            ),
            "ClientStream": grpc.stream_unary_rpc_method_handler(
                self._client_stream, StringValue.FromString, StringValue.SerializeToString
            ),
            "Bidi": grpc.stream_stream_rpc_method_handler(
                self._bidi, StringValue.FromString, StringValue.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", handlers),)
        )
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server

    async def _gate(self, name: str, context: Any) -> None:
        b = self.behaviour
        b.calls.append(name)
        # Like the bootstrap: every answer, errors included, names the node in trailers.
        context.set_trailing_metadata((("localfirst-node", self.node),))
        b.metadata.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        if b.fail_next > 0:
            b.fail_next -= 1
            trailers = () if b.pushback is None else (("grpc-retry-pushback-ms", b.pushback),)
            await context.abort(b.fail_code, f"{self.node} fails", trailing_metadata=trailers)
        if b.unavailable_next > 0:
            b.unavailable_next -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.node} is shedding load")
        if b.app_error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.node} rejects this")
        # Like the bootstrap: unary responses name the node in trailers,
        # streamed ones in headers.
        context.set_trailing_metadata((("localfirst-node", self.node),))
        if name in ("ServerStream", "Bidi") or b.unavailable_after_headers:
            await context.send_initial_metadata((("localfirst-node", self.node),))
        if b.unavailable_after_headers:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.node} failed after headers")

    def _reply(self, value: str) -> StringValue:
        return StringValue(value=f"{self.node}:{value}")

    async def _unary(self, request: StringValue, context: Any) -> StringValue:
        await self._gate("Unary", context)
        await asyncio.sleep(self.behaviour.delay)
        self.behaviour.executions += 1
        return self._reply(request.value)

    async def _server_stream(
        self, request: StringValue, context: Any
    ) -> AsyncIterator[StringValue]:
        await self._gate("ServerStream", context)
        for i in range(int(request.value or "3")):
            yield self._reply(str(i))

    async def _client_stream(
        self, requests: AsyncIterator[StringValue], context: Any
    ) -> StringValue:
        got = [r.value async for r in requests]
        self.behaviour.received.append(got)
        await self._gate("ClientStream", context)
        return self._reply(",".join(got))

    async def _bidi(
        self, requests: AsyncIterator[StringValue], context: Any
    ) -> AsyncIterator[StringValue]:
        if self.behaviour.unavailable_next > 0:
            # Read the whole request stream before failing: grpc.aio reports a
            # client whose send races with the server's status as INTERNAL
            # ("Internal error from Core"), hiding the UNAVAILABLE.
            async for _ in requests:
                pass
            await self._gate("Bidi", context)  # aborts
        first = await anext(requests)
        await self._gate("Bidi", context)
        yield self._reply(first.value)
        async for request in requests:
            yield self._reply(request.value)
