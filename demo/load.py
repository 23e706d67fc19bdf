"""A steady stream of unary calls, recording who answered and when."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import grpc

if TYPE_CHECKING:  # generated code: importable once protoc has run
    from greeter.v1.greeter_pb2 import HelloReply


@dataclass(frozen=True)
class Answer:
    at: float
    reply: HelloReply | None
    error: grpc.RpcError | None = None


class SteadyLoad:
    """``workers`` tasks calling ``say_hello`` back to back until the block ends."""

    def __init__(self, client: Any, workers: int = 4, pause: float = 0.005) -> None:
        self.client = client
        self.workers = workers
        self.pause = pause
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.workers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        from greeter.v1.greeter_pb2 import HelloRequest

        while not self._stop.is_set():
            try:
                reply = await self.client.say_hello(HelloRequest(name="steady"), timeout=5)
                self.answers.append(Answer(time.monotonic(), reply))
            except grpc.RpcError as error:
                self.answers.append(Answer(time.monotonic(), None, error))
            await asyncio.sleep(self.pause)

    @property
    def failures(self) -> list[grpc.RpcError]:
        return [a.error for a in self.answers if a.error is not None]

    def replies_since(self, since: float) -> list[HelloReply]:
        return [a.reply for a in self.answers if a.reply is not None and a.at >= since]

    def replies_before(self, until: float) -> list[HelloReply]:
        return [a.reply for a in self.answers if a.reply is not None and a.at < until]

    def replies_between(self, since: float, until: float) -> list[HelloReply]:
        return [a.reply for a in self.answers if a.reply is not None and since <= a.at < until]

    async def wait_for(
        self, predicate: Callable[[HelloReply], bool], since: float, timeout: float = 20.0
    ) -> float:
        """Seconds from ``since`` until a reply matching ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for answer in self.answers:
                if answer.at >= since and answer.reply is not None and predicate(answer.reply):
                    return answer.at - since
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching reply within {timeout} s")
