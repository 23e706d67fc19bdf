"""Server load: calls in flight, admission control, and the report every response carries.

Sans-IO apart from reading the clock and the process's CPU time (both
injected for tests). The node announcer (``announce``) asks ``admit()``
before a handler runs and calls ``release()`` after; every response's
trailers carry ``report()`` (``loadreport``: ORCA's ``OrcaLoadReport`` in
``localfirst-load-bin``), on HTTP/2 and HTTP/3 alike, because both
serve through the same handler wrappers.

The limit is always there: with ``serve(admission=8)`` it is 8; otherwise
it adapts to the latency the server sees (``AdaptiveLimit``). Reports carry
it either way, and clients keep their calls off a replica whose reported
calls in flight reach it. Whether calls over it are also refused is
admission control, off unless asked for:

- ``admission=8``: at most 8 calls run at once; the 9th is refused at once.
- ``admission=AdmissionControl()``: the adaptive limit is enforced.

Apart from admission control, ``max_calls`` (``serve(max_concurrent_calls=...)``,
default 128) is a hard cap that is always enforced, with the same refusal:
it bounds the memory slow handlers can pin (see ``server.options``).

The node announcer asks ``full()`` when grpc (or the HTTP/3 server) asks
for the call's handler, before the request body is read (grpc.aio reads a
unary request whole only after finding its handler), and ``admit()`` again
in the handler wrapper; so a refused call costs no request body.

A refused call gets UNAVAILABLE before its handler ran, with the
``localfirst-overloaded`` trailer: our clients send it to another replica
at once, idempotent or not, and without spending their retry budget;
other gRPC clients see a normal retryable UNAVAILABLE. Refusing at once
beats queueing: a queued call waits until its deadline, and its handler
still runs for nothing (grpc cancels it at the deadline).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from protoc_gen_localfirst.runtime.loadreport import LoadReport, encode

log = logging.getLogger("protoc_gen_localfirst.server")

LoadMetrics = Callable[[], Mapping[str, float]]
"""A hook returning custom named metrics (e.g. queue depth) for every load report."""


@dataclass(frozen=True)
class AdmissionControl:
    """An adaptive concurrency limit (TCP Vegas applied to calls, after Netflix's
    concurrency-limits ``VegasLimit``).

    The server keeps the lowest unary latency it saw recently as its no-load
    latency. With the limit at ``L`` and the latest latency ``rtt``, about
    ``L * (1 - no_load / rtt)`` calls are queueing rather than being worked
    on. Fewer than ``min_queue`` (times ``log10 L`` once ``L`` > 10) queueing:
    the limit grows by one; more than ``max_queue``: it shrinks by one. So the
    limit settles where a call or two wait, enough to keep the server busy,
    while the rest is refused at once and served by other replicas. Vegas
    proper tolerates 3-6 queued calls; local-first wants the local replica's
    latency close to its no-load latency, the other replicas take the rest.
    While fewer than half the limit are in flight the limit does not move
    (the load, not the limit, decides the latency then). Only unary calls
    are measured (a stream's duration says nothing about queueing).
    """

    initial_limit: int = 20
    min_limit: int = 2
    max_limit: int = 1000
    min_queue: float = 1.0
    max_queue: float = 3.0
    probe_interval: float = 30.0
    """Seconds after which the no-load latency is measured afresh (it may have changed)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                "AdmissionControl needs 1 <= min_limit <= initial_limit <= max_limit, got "
                f"{self.min_limit}, {self.initial_limit}, {self.max_limit}"
            )
        if not 0 <= self.min_queue < self.max_queue:
            raise ValueError(
                "AdmissionControl needs 0 <= min_queue < max_queue, got"
                f" {self.min_queue}, {self.max_queue}"
            )
        if not (math.isfinite(self.probe_interval) and self.probe_interval > 0):
            raise ValueError(
                f"AdmissionControl.probe_interval must be > 0, got {self.probe_interval}"
            )


class AdaptiveLimit:
    """The adaptive limit's state (see ``AdmissionControl``)."""

    def __init__(self, settings: AdmissionControl, now: float) -> None:
        self.settings = settings
        self.limit = float(settings.initial_limit)
        self._no_load: float | None = None
        self._no_load_since = now

    def sample(self, latency: float, in_flight: int, now: float) -> None:
        """A unary call took ``latency`` seconds with ``in_flight`` calls running."""
        settings = self.settings
        if now - self._no_load_since > settings.probe_interval:
            self._no_load, self._no_load_since = None, now
        if self._no_load is None or latency < self._no_load:
            self._no_load = latency
        if latency <= 0 or in_flight * 2 < self.limit:
            return  # app-limited: the limit is not what binds, so latency says nothing of it
        queueing = self.limit * (1 - self._no_load / latency)
        scale = max(math.log10(self.limit), 1.0)
        if queueing < settings.min_queue * scale:
            self.limit = min(self.limit + 1, settings.max_limit)
        elif queueing > settings.max_queue * scale:
            self.limit = max(self.limit - 1, settings.min_limit)


class ServerLoad:
    """Calls in flight, the concurrency limit, and the load report of one server."""

    def __init__(
        self,
        admission: AdmissionControl | int | None = None,
        *,
        metrics: LoadMetrics | None = None,
        max_calls: int | None = None,
        max_held_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        cpus: int | None = None,
    ) -> None:
        static = isinstance(admission, int) and not isinstance(admission, bool)
        if not (admission is None or isinstance(admission, AdmissionControl) or static) or (
            static and admission < 1  # type: ignore[operator]
        ):
            raise ValueError(
                "admission must be None, a limit >= 1 (calls running at once) or"
                f" AdmissionControl(), got {admission!r}"
            )
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"max_calls must be None or >= 1, got {max_calls!r}")
        self.max_calls = max_calls
        """A hard cap on calls in flight (``max_concurrent_calls``), always enforced."""
        self.max_held_bytes = max_held_bytes
        """A cap on the bytes of unary requests whose calls run (``max_buffered_bytes``):
        grpc reads a unary request whole before its handler, which holds it."""
        self.held_bytes = 0
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._cpus = cpus or os.cpu_count() or 1
        self._metrics = metrics
        self._static = admission if isinstance(admission, int) else None
        self.enforced = admission is not None
        """Whether calls over the limit are refused (else the limit is only reported)."""
        now = clock()
        # Without admission control the adaptive estimate still runs: it is the
        # capacity the load reports give, which clients spill by.
        self._estimate = AdaptiveLimit(
            admission if isinstance(admission, AdmissionControl) else AdmissionControl(), now
        )
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused = 0
        self._started = 0
        self._window_start = now
        self._window_cpu = cpu_clock()
        self._rps = 0.0
        self._cpu = 0.0

    @property
    def limit(self) -> int:
        """The concurrency limit now: enforced with admission control, else estimated;
        never above ``max_calls``."""
        limit = self._static if self._static is not None else int(self._estimate.limit)
        return limit if self.max_calls is None else min(limit, self.max_calls)

    def _full(self, request_bytes: int = 0) -> bool:
        if self.max_calls is not None and self.in_flight >= self.max_calls:
            return True
        if self._over_bytes(request_bytes):
            return True
        return self.enforced and self.in_flight >= self.limit

    def _over_bytes(self, request_bytes: int) -> bool:
        limit = self.max_held_bytes
        if limit is None or self.held_bytes == 0:
            return False  # one call at a time always fits, whatever its size
        # Only what does not fit is refused: small requests still fit beside big ones.
        return self.held_bytes + request_bytes > limit

    def full(self) -> bool:
        """Whether a call arriving now would be refused; counts it as refused if so.

        Asked before the request is read (``announce``), so a call that will
        be refused costs no request body; ``admit`` decides for good.
        """
        with self._lock:
            if self._full():
                self.refused += 1
                return True
            return False

    def admit(self, request_bytes: int = 0) -> bool:
        """Count a new call in (holding a unary request of ``request_bytes``),
        unless the server is at a limit (then it is refused)."""
        with self._lock:
            if self._full(request_bytes):
                self.refused += 1
                return False
            self.in_flight += 1
            self.held_bytes += request_bytes
            self._started += 1
            return True

    def release(self, latency: float | None, request_bytes: int = 0) -> None:
        """A call admitted by ``admit`` ended; ``latency`` for unary calls."""
        with self._lock:
            in_flight = self.in_flight
            self.in_flight -= 1
            self.held_bytes -= request_bytes
            if latency is not None and self._static is None:
                self._estimate.sample(latency, in_flight, self._clock())

    def report(self) -> bytes:
        """The serialized load report for a response going out now."""
        self._roll_window()
        custom: Mapping[str, float] = {}
        if self._metrics is not None:
            try:
                custom = self._metrics()
            except Exception:  # a broken hook must not break responses
                log.exception("load_metrics hook failed; its metrics are left out")
        return encode(
            LoadReport(
                in_flight=self.in_flight,
                limit=self.limit,
                cpu_utilization=self._cpu,
                rps=self._rps,
                metrics=custom,
            )
        )

    def _roll_window(self) -> None:
        """Every second: calls started per second and the CPU share over the last one."""
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < 1.0:
            return
        cpu = self._cpu_clock()
        with self._lock:
            self._rps = self._started / elapsed
            self._cpu = max(cpu - self._window_cpu, 0.0) / elapsed / self._cpus
            self._started = 0
            self._window_start, self._window_cpu = now, cpu

    def overload_details(self) -> str:
        held = ""
        if self.max_held_bytes is not None and self.held_bytes:
            held = f", {self.held_bytes} request bytes held, limit {self.max_held_bytes}"
        return (
            f"overloaded: {self.in_flight} calls in flight, limit {self.limit}{held};"
            " not processed, try another replica"
        )


class CallLoad(Protocol):
    """What the handler wrappers need: ``ServerLoad``, or ``UncountedLoad`` for health checks."""

    def admit(self, request_bytes: int = 0) -> bool: ...

    def release(self, latency: float | None, request_bytes: int = 0) -> None: ...

    def report(self) -> bytes: ...

    def overload_details(self) -> str: ...


class UncountedLoad:
    """Health checks carry the load report but are neither counted nor refused:
    a busy replica is alive, and a prober learns its load before sending calls."""

    def __init__(self, load: ServerLoad) -> None:
        self._load = load

    def admit(self, request_bytes: int = 0) -> bool:
        return True

    def release(self, latency: float | None, request_bytes: int = 0) -> None:
        pass

    def report(self) -> bytes:
        return self._load.report()

    def overload_details(self) -> str:
        return self._load.overload_details()
