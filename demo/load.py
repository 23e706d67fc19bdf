"""The load generators of the demo, the benchmarks and the tests; every call recorded.

:class:`Load` runs ``workers`` tasks that call back to back until its
``async with`` block ends (closed loop) and records each call as a
:class:`Call` (method, request id, start and end, the reply or the status).
Questions are asked afterwards (``failures``, ``replies_since``,
``first_success``...) or while it runs (``await load.wait_for(predicate,
since)``).

``Load.steady(client)`` calls the generated GreeterClient: ``rpc="say_hello"``
is not idempotent (a call in flight on a replica that is killed fails: its
outcome is unknown, so it is not retried); ``rpc="who_am_i"`` has no side
effects (such a call is retried elsewhere). ``Load(call, mix=...)`` calls any
``CallFn``, e.g. SayHello with a unique id per call.

:class:`OpenLoad` starts SayHello calls on a fixed schedule whether or not
earlier calls have returned (open loop).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import grpc

CallFn = Callable[[str, str], Awaitable[Any]]
"""``(method, request_id) -> reply``; method is "SayHello" or "WhoAmI"."""


@dataclass(frozen=True)
class Call:
    method: str
    request_id: str
    started: float
    ended: float
    reply: Any = None  # the HelloReply; None when the call failed
    code: str | None = None  # grpc status name when it failed
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def replica(self) -> str | None:
        """Who answered (``HelloReply.replica``); None when the call failed."""
        return None if self.reply is None else str(self.reply.replica)

    @property
    def node(self) -> str | None:
        """The answering replica's node (``HelloReply.node``); None when the call failed."""
        return None if self.reply is None else str(self.reply.node)

    @property
    def latency(self) -> float:
        return self.ended - self.started


async def make_call(call: CallFn, method: str, request_id: str, hang: float | None) -> Call:
    """Make one call and record it; one still running after ``hang`` seconds is CLIENT_HANG."""
    started = time.monotonic()
    try:
        reply = await asyncio.wait_for(call(method, request_id), hang)
        return Call(method, request_id, started, time.monotonic(), reply)
    except grpc.RpcError as error:
        code = error.code()
        return Call(method, request_id, started, time.monotonic(), None,
                    code.name if code else "UNKNOWN", error.details() or "")  # fmt: skip
    except TimeoutError:
        return Call(method, request_id, started, time.monotonic(), None, "CLIENT_HANG")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def greeter_calls(client: Any, timeout: float) -> CallFn:
    """Calls of the generated GreeterClient: "SayHello" (the request id as name) or "WhoAmI"."""

    async def call(method: str, request_id: str) -> Any:
        from greeter.v1.greeter_pb2 import HelloRequest, WhoAmIRequest

        if method == "SayHello":
            return await client.say_hello(HelloRequest(name=request_id), timeout=timeout)
        if method == "WhoAmI":
            return await client.who_am_i(WhoAmIRequest(), timeout=timeout)
        raise ValueError(f"method must be SayHello or WhoAmI, got {method!r}")

    return call


@dataclass
class Load:
    """``workers`` tasks calling back to back (``pause`` between calls), methods cycled from ``mix``."""

    call: CallFn
    workers: int = 4
    pause: float = 0.005
    timeout: float = 2.0
    mix: Sequence[str] = ("SayHello",)
    prefix: str = "call"
    max_calls: int = 200_000
    calls: list[Call] = field(default_factory=list)

    @classmethod
    def steady(
        cls,
        client: Any,
        workers: int = 4,
        pause: float = 0.005,
        rpc: str = "say_hello",
        timeout: float = 5.0,
    ) -> Load:
        """A steady stream of one unary rpc of a GreeterClient: "say_hello" or "who_am_i"."""
        methods = {"say_hello": "SayHello", "who_am_i": "WhoAmI"}
        if rpc not in methods:
            raise ValueError(f"rpc must be say_hello or who_am_i, got {rpc!r}")
        return cls(
            greeter_calls(client, timeout), workers=workers, pause=pause, timeout=timeout,
            mix=(methods[rpc],), prefix="steady",
        )  # fmt: skip

    def __post_init__(self) -> None:
        self._ids = itertools.count()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(self._run(w)) for w in range(self.workers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, worker: int) -> None:
        shift = worker % len(self.mix)
        methods = itertools.cycle([*self.mix[shift:], *self.mix[:shift]])
        while not self._stop.is_set() and len(self.calls) < self.max_calls:
            method = next(methods)
            request_id = f"{self.prefix}-{next(self._ids)}"
            self.calls.append(await make_call(self.call, method, request_id, self.timeout + 5))
            if self.pause:
                await asyncio.sleep(self.pause)

    # -- questions asked afterwards ----------------------------------------------------

    def failures(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if not c.ok and (method is None or c.method == method)]

    def during(self, since: float, until: float, method: str | None = None) -> list[Call]:
        """Calls that were in flight at some point of [since, until]."""
        return [
            c for c in self.calls
            if c.started <= until and c.ended >= since and (method is None or c.method == method)
        ]  # fmt: skip

    def replies_since(self, since: float) -> list[Any]:
        """Replies of the calls that ended at or after ``since``."""
        return [c.reply for c in self.calls if c.ok and c.ended >= since]

    def replies_before(self, until: float) -> list[Any]:
        """Replies of the calls that ended before ``until``."""
        return [c.reply for c in self.calls if c.ok and c.ended < until]

    def replies_between(self, since: float, until: float) -> list[Any]:
        """Replies of the calls that ended in [since, until)."""
        return [c.reply for c in self.calls if c.ok and since <= c.ended < until]

    def p99_ms(self, calls: Iterable[Call]) -> float:
        return percentile([c.latency for c in calls if c.ok], 99) * 1000

    def first_success(
        self, since: float, where: Callable[[str], bool] = lambda r: True
    ) -> float | None:
        """Seconds from ``since`` to the end of the first successful call started after it
        and answered by a replica matching ``where``."""
        ends = [
            c.ended for c in self.calls if c.ok and c.started >= since and where(c.replica or "")
        ]
        return min(ends) - since if ends else None

    def recovered_after(self, since: float, slow: float) -> float:
        """Seconds from ``since`` to the end of the last call that failed or took longer
        than ``slow`` seconds (0 when none did): how long the event disturbed callers."""
        ends = [c.ended for c in self.calls if c.ended >= since and (not c.ok or c.latency > slow)]
        return max(ends) - since if ends else 0.0

    def assert_only_in_flight_calls_failed(self, kills: int) -> None:
        """After ``kills`` SIGKILLs: only calls in flight at a kill may fail, each with the
        transport error of that one attempt (never "all attempts failed"), since a
        non-idempotent call whose request may have run is not retried."""
        failures = self.failures()
        assert len(failures) <= kills * self.workers, f"{len(failures)} failed: {failures[:3]}"
        for call in failures:
            assert call.code == "UNAVAILABLE", call
            assert "attempts failed" not in call.details, call

    async def wait_for(
        self, predicate: Callable[[Call], bool], since: float, timeout: float = 20.0
    ) -> float:
        """Seconds from ``since`` until a call matching ``predicate`` ended (successful calls
        have ``replica`` and ``node``); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [c.ended for c in self.calls if c.ended >= since and predicate(c)]
            if found:
                return min(found) - since
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching call within {timeout} s")


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
        self.call = greeter_calls(client, timeout)
        self.rate = rate
        self.duration = duration
        self.late = late
        self.calls: list[Call] = []
        self.late_starts = 0
        self.elapsed = 0.0
        """Seconds from the first scheduled start to the last actual one."""

    @property
    def scheduled(self) -> int:
        """How many calls the schedule starts."""
        return round(self.rate * self.duration)

    async def run(self) -> Self:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        start = loop.time()
        for i in range(self.scheduled):
            scheduled = start + i / self.rate
            await asyncio.sleep(max(scheduled - loop.time(), 0))  # yields even when behind
            if loop.time() - scheduled > self.late:
                self.late_starts += 1
            tasks.append(asyncio.create_task(self._call(f"open {i}")))
        self.elapsed = loop.time() - start
        await asyncio.gather(*tasks)
        return self

    async def _call(self, request_id: str) -> None:
        # No hang guard (None): each call carries its own deadline (``timeout``).
        self.calls.append(await make_call(self.call, "SayHello", request_id, None))

    def failures(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]

    def share(self, node: str) -> float:
        """The share of all calls answered by a replica on ``node``."""
        on_node = sum(c.node == node for c in self.calls)
        return on_node / len(self.calls) if self.calls else 0.0
