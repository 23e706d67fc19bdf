"""A Greeter servicer for HTTP/3 tests, with behaviour picked by the request name.

* ``echo``: response headers and trailers carry the request's ``x-*`` metadata
  (``-bin`` too), headers sent with ``send_initial_metadata``.
* ``fail``: NOT_FOUND with ``FAIL_MESSAGE`` (non-ASCII, control characters, ``%``).
* ``sleep``: sleeps ``SLEEP`` seconds (deadline tests); records cancellation.
* ``big``: a reply of ``count`` bytes.
* ``boom``: raises ValueError (UNKNOWN).
* anything else: ``hello <name>``.

``LotsOfGreetings`` reads nothing until ``reading`` is set (set by default;
tests clear it to make request bytes pile up in the server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from greeter.v1.greeter_localfirst import GreeterServicer
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

FAIL_MESSAGE = "nicht gefunden: «ü» 100% \t\n\x01 ✓"
SLEEP = 5.0


def _echoed(context: Any) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k.startswith("x-"))


class EchoGreeter(GreeterServicer):
    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.completed: list[str] = []
        self.reading = asyncio.Event()
        self.reading.set()

    async def _common(self, request: HelloRequest, context: Any) -> HelloReply | None:
        if request.name == "echo":
            echoed = _echoed(context)
            await context.send_initial_metadata(echoed)
            context.set_trailing_metadata(echoed)
        elif request.name == "fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, FAIL_MESSAGE)
        elif request.name == "boom":
            raise ValueError("boom")
        elif request.name.startswith("sleep"):
            try:
                await asyncio.sleep(float(request.name[5:] or SLEEP))
            except asyncio.CancelledError:
                self.cancelled.append(request.name)
                raise
            self.completed.append(request.name)
        elif request.name == "big":
            return HelloReply(message="x" * request.count)
        return None

    async def SayHello(self, request: HelloRequest, context: Any) -> HelloReply:
        special = await self._common(request, context)
        return special or HelloReply(message=f"hello {request.name}")

    async def LotsOfReplies(self, request: HelloRequest, context: Any) -> AsyncIterator[HelloReply]:
        await self._common(request, context)
        for i in range(request.count if request.HasField("count") else 3):
            yield HelloReply(message=f"{request.name} {i}")

    async def LotsOfGreetings(
        self, request_iterator: AsyncIterator[HelloRequest], context: Any
    ) -> HelloReply:
        await self.reading.wait()
        names = [r.name async for r in request_iterator]
        return HelloReply(message="hello " + ", ".join(names))

    async def BidiHello(
        self, request_iterator: AsyncIterator[HelloRequest], context: Any
    ) -> AsyncIterator[HelloReply]:
        async for request in request_iterator:
            yield HelloReply(message=f"hi {request.name}")
