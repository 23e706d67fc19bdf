"""Latency statistics and the closed-loop load generator the benchmarks share."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """One run: per-call latencies (seconds) and wall time."""

    samples: tuple[float, ...]
    wall: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50_ms(self) -> float:
        return self.percentile(50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.percentile(99) * 1000

    @property
    def calls_per_s(self) -> float:
        return len(self.samples) / self.wall

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples) * 1000


async def closed_loop(
    call: Callable[[], Awaitable[object]], *, concurrency: int, calls: int, warmup: int = 200
) -> Latency:
    """``calls`` calls from ``concurrency`` workers, each starting the next when one returns."""
    for _ in range(warmup):
        await call()
    samples: list[float] = []
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Latency(tuple(samples), time.perf_counter() - began)
