"""Load for the demo: a steady stream of unary calls (closed loop), recording who
answered and when, and an open-loop schedule of calls (``OpenLoad``)."""

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
    """``workers`` tasks calling one rpc back to back until the block ends.

    ``rpc="say_hello"`` is not idempotent: a call in flight on a replica that
    is killed fails (its outcome is unknown, so it is not retried).
    ``rpc="who_am_i"`` has no side effects: such a call is retried elsewhere.
    """

    def __init__(
        self, client: Any, workers: int = 4, pause: float = 0.005, rpc: str = "say_hello"
    ) -> None:
        if rpc not in ("say_hello", "who_am_i"):
            raise ValueError(f"rpc must be say_hello or who_am_i, got {rpc!r}")
        self.client = client
        self.rpc = rpc
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
        from greeter.v1.greeter_pb2 import HelloRequest, WhoAmIRequest

        while not self._stop.is_set():
            try:
                if self.rpc == "who_am_i":
                    reply = await self.client.who_am_i(WhoAmIRequest(), timeout=5)
                else:
                    reply = await self.client.say_hello(HelloRequest(name="steady"), timeout=5)
                self.answers.append(Answer(time.monotonic(), reply))
            except grpc.RpcError as error:
                self.answers.append(Answer(time.monotonic(), None, error))
            await asyncio.sleep(self.pause)

    @property
    def failures(self) -> list[grpc.RpcError]:
        return [a.error for a in self.answers if a.error is not None]

    def assert_only_in_flight_calls_failed(self, kills: int) -> None:
        """After ``kills`` SIGKILLs: only calls in flight at a kill may fail, each with the
        transport error of that one attempt (never "all attempts failed"), since a
        non-idempotent call whose request may have run is not retried."""
        failures = self.failures
        assert len(failures) <= kills * self.workers, f"{len(failures)} failed: {failures[:3]}"
        for error in failures:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert "attempts failed" not in (error.details() or ""), error

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


class OpenLoad:
    """SayHello calls started on a fixed schedule, ``rate`` per second for ``duration``
    seconds, whether or not earlier calls have returned (open loop: a slow server
    does not slow the load down, as with many independent callers).

    A call that starts more than ``late`` seconds after its scheduled time is a
    late start: the load generator, not the servers, was short of CPU.
    """

    def __init__(
        self, client: Any, rate: float, duration: float, timeout: float = 1.0, late: float = 0.010
    ) -> None:
        self.client = client
        self.rate = rate
        self.duration = duration
        self.timeout = timeout
        self.late = late
        self.answers: list[Answer] = []
        self.late_starts = 0
        self.elapsed = 0.0
        """Seconds from the first scheduled start to the last actual one."""

    @property
    def calls(self) -> int:
        return round(self.rate * self.duration)

    async def run(self) -> Self:
        from greeter.v1.greeter_pb2 import HelloRequest

        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        start = loop.time()
        for i in range(self.calls):
            scheduled = start + i / self.rate
            await asyncio.sleep(max(scheduled - loop.time(), 0))  # yields even when behind
            if loop.time() - scheduled > self.late:
                self.late_starts += 1
            request = HelloRequest(name=f"open {i}")
            tasks.append(asyncio.create_task(self._call(request)))
        self.elapsed = loop.time() - start
        await asyncio.gather(*tasks)
        return self

    async def _call(self, request: Any) -> None:
        try:
            reply = await self.client.say_hello(request, timeout=self.timeout)
            self.answers.append(Answer(time.monotonic(), reply))
        except grpc.RpcError as error:
            self.answers.append(Answer(time.monotonic(), None, error))

    @property
    def failures(self) -> list[grpc.RpcError]:
        return [a.error for a in self.answers if a.error is not None]

    def share(self, node: str) -> float:
        """The share of all calls answered by a replica on ``node``."""
        on_node = sum(a.reply is not None and a.reply.node == node for a in self.answers)
        return on_node / len(self.answers) if self.answers else 0.0
