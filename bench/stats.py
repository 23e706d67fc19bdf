"""What the benchmarks share: latency statistics, the closed-loop load generator, and
the description of the machine they ran on."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

K = TypeVar("K")
T = TypeVar("T")


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

    def __add__(self, other: Latency) -> Latency:
        """Two runs of one variant as one (the calls of both, the wall time of both)."""
        return Latency(self.samples + other.samples, self.wall + other.wall)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples) * 1000


def round_order(variants: Mapping[K, T], round_index: int) -> list[tuple[K, T]]:
    """The variants in the order round ``round_index`` runs them: reversed every other
    round, so that no variant always runs first (just after the setup or the previous
    setting) or right after the same neighbour."""
    items = list(variants.items())
    return items[::-1] if round_index % 2 else items


async def abba_round(
    variants: Mapping[K, Callable[[], Awaitable[object]]],
    round_index: int,
    *,
    concurrency: int,
    calls: int,
) -> dict[K, Latency]:
    """One round of closed loops: every variant runs twice, ``calls // 2`` calls each
    time, in the order A B .. B A (``round_order``, then reversed), and its two halves
    count as one run. A machine that speeds up or slows down during the round (a
    neighbour on a shared host) then weighs on every variant alike, where running
    each once, one after another, gives the drift to whichever ran later."""
    order = round_order(variants, round_index)
    halves: dict[K, list[Latency]] = {name: [] for name, _ in order}
    for name, call in order + order[::-1]:
        halves[name].append(await closed_loop(call, concurrency=concurrency, calls=calls // 2))
    return {name: first + second for name, (first, second) in halves.items()}


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


def machine() -> dict[str, str]:
    """What the numbers ran on: CPU model, cores, Python, kernel, library versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("grpcio", "qh3", "aioquic", "protobuf"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


def describe(facts: dict[str, str]) -> str:
    """``machine()`` as one line."""
    return ", ".join(f"{key} {value}" for key, value in facts.items())
