"""Hooks for metrics and logs: what a client's calls do, as events and counters.

Pass observers to a client (``AsyncClient(target, observers=[LoggingObserver()])``);
every client also keeps counters in ``client.stats``. Observers are called
synchronously on the calling thread or event loop: keep them cheap and never
raise from them (an exception is logged and swallowed). Subclass
``BaseObserver`` and override only the events you need; any object with the
methods of ``CallObserver`` works too.

Per call, ``on_call_started``/``on_call_finished`` and, per attempt,
``on_attempt_started``/``on_attempt_finished`` carry typed records
(``CallInfo``, ``AttemptInfo``, ``AttemptFinished``, ``CallFinished``) with
everything a metrics or tracing observer needs: method, target, endpoint,
node, locality tier, outcome, status, latency, retries, hedges, failovers.
An observer may add request metadata to an attempt in ``on_attempt_started``
(``AttemptInfo.add_metadata``; trace context, for instance): both clients
send it on both transports. OpenTelemetry: ``protoc_gen_localfirst.otel``
(the ``otel`` extra) is such an observer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import grpc

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

log = logging.getLogger("protoc_gen_localfirst.calls")

Locality = Literal["node", "zone", "other"]
"""An endpoint's locality tier as the caller sees it: on its node, in its zone, elsewhere."""

LOCALITY_TIERS: tuple[Locality, ...] = ("node", "zone", "other")
"""Indexed by ``Balancer.tier`` (0 = caller's node, 1 = caller's zone, 2 = elsewhere)."""

Outcome = Literal["ok", "error", "unsent", "refused", "cancelled"]
"""How an attempt ended: ``ok``; ``error`` (a status from the server or the
transport, deadline included); ``unsent`` (it never left the client: no
connection, stream refused, server stopping; retried transparently);
``refused`` (a replica refused it unprocessed: admission control, overload);
``cancelled`` (a hedged attempt that lost the race, or the caller cancelled)."""


@dataclass(eq=False, slots=True)
class CallInfo:
    """One call, from ``on_call_started`` to ``on_call_finished`` (the same object:
    observers may key their per-call state on it)."""

    method: str
    """``package.Service/Method`` (gRFC A66 ``grpc.method``)."""
    path: str
    """``/package.Service/Method``, the HTTP/2 path."""
    target: str
    """The client's target, e.g. ``dns:///greeter:50051`` (gRFC A66 ``grpc.target``)."""
    transport: str
    """The client's transport: ``h2``, ``h3`` or ``auto``."""
    kind: str
    """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``."""
    started_at: float
    """``time.monotonic()`` when the call started."""


@dataclass(eq=False, slots=True)
class AttemptInfo:
    """One attempt, from ``on_attempt_started`` to ``on_attempt_finished`` (same object)."""

    call: CallInfo
    number: int
    """1 for the call's first attempt (transparent retries count too)."""
    endpoint: Endpoint
    locality: Locality
    """The endpoint's tier when the attempt started: ``node``, ``zone`` or ``other``."""
    hedged: bool
    started_at: float
    metadata: list[tuple[str, str]] = field(default_factory=list)
    """Request metadata observers added (``add_metadata``), sent with this attempt only."""

    @property
    def node(self) -> str | None:
        """The endpoint's node, if known."""
        return self.endpoint.node

    def add_metadata(self, key: str, value: str) -> None:
        """Send ``key: value`` with this attempt (call it from ``on_attempt_started``)."""
        self.metadata.append((key, value))


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """How an attempt ended (``on_attempt_finished``)."""

    attempt: AttemptInfo
    outcome: Outcome
    code: grpc.StatusCode
    """``OK``, the status it failed with, or ``CANCELLED``."""
    latency: float
    """Seconds from the attempt's start to its end."""
    node: str | None = None
    """The node the server announced (or the endpoint's, if it announced none)."""


@dataclass(frozen=True, slots=True)
class CallFinished:
    """How a call ended (``on_call_finished``): once per call, whatever the outcome."""

    call: CallInfo
    code: grpc.StatusCode
    """The status the caller saw: ``OK``, the error's code, or ``CANCELLED``."""
    latency: float
    """Seconds from the call's start to its end (for streams: the end of the stream)."""
    attempts: int
    """Attempts started, transparent retries and hedges included."""
    retries: int
    """Attempts after the first, not counting transparent retries (gRFC A96)."""
    transparent_retries: int
    """Attempts that followed one that never left the client."""
    retry_delay: float
    """Seconds between attempts with none in flight (backoff, waits for endpoints; gRFC A96)."""
    hedges: int
    failovers: int
    """Attempts sent to another endpoint than the failed one before them."""
    spill: str | None
    """Why the caller's node was passed over for this call (``full``/``slow``), or None."""
    endpoint: Endpoint | None
    """Where the answer came from (success) or the last attempt went; None if none started."""
    locality: Locality | None
    """That endpoint's tier."""

    @property
    def method(self) -> str:
        return self.call.method

    @property
    def target(self) -> str:
        return self.call.target


class CallObserver(Protocol):
    """Events of a client's calls. ``method`` is the rpc's path, ``/pkg.Service/Method``."""

    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        """An attempt starts (``attempt`` is 1 for the first); ``hedged`` for hedged attempts."""

    def on_retry(self, method: str, attempt: int, code: grpc.StatusCode, delay: float) -> None:
        """Attempt number ``attempt`` failed with ``code``; the next one starts in ``delay`` s."""

    def on_failover(self, method: str, failed: Endpoint, next_endpoint: Endpoint) -> None:
        """The next attempt goes to another endpoint than the one that failed."""

    def on_hedge(self, method: str, endpoint: Endpoint, attempt: int) -> None:
        """A hedged attempt was sent to ``endpoint`` while earlier ones are still out."""

    def on_throttled(self, method: str) -> None:
        """A retry or hedge was not sent: the target's retry token bucket is low."""

    def on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        """``endpoint`` failed again and is avoided for ``duration`` seconds."""

    def on_endpoints_changed(self, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> None:
        """Discovery delivered a different set of ready endpoints."""

    def on_spill(self, method: str, reason: str) -> None:
        """A call left the caller's own node because it is busy.

        ``reason``: ``"full"`` (its replicas reported being at their limit),
        ``"slow"`` (they answer slower than the next tier) or ``"refused"``
        (a replica refused the call unprocessed: admission control).
        """

    def on_call_started(self, call: CallInfo) -> None:
        """A call starts (before its first attempt)."""

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        """An attempt starts; ``attempt.add_metadata`` adds request metadata to it."""

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        """An attempt ended: outcome, status, latency."""

    def on_call_finished(self, event: CallFinished) -> None:
        """A call ended, once, whatever the outcome (cancelled and abandoned streams too)."""


class BaseObserver:
    """A ``CallObserver`` that ignores every event: subclass and override some."""

    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        pass

    def on_retry(self, method: str, attempt: int, code: grpc.StatusCode, delay: float) -> None:
        pass

    def on_failover(self, method: str, failed: Endpoint, next_endpoint: Endpoint) -> None:
        pass

    def on_hedge(self, method: str, endpoint: Endpoint, attempt: int) -> None:
        pass

    def on_throttled(self, method: str) -> None:
        pass

    def on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        pass

    def on_endpoints_changed(self, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> None:
        pass

    def on_spill(self, method: str, reason: str) -> None:
        pass

    def on_call_started(self, call: CallInfo) -> None:
        pass

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        pass

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        pass

    def on_call_finished(self, event: CallFinished) -> None:
        pass


class LoggingObserver(BaseObserver):
    """Logs retries, failovers, hedges, throttling, ejections and endpoint changes.

    Attempts are logged at DEBUG (one per attempt: too many for INFO).
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger

    def on_attempt(self, endpoint: Endpoint, method: str, attempt: int, hedged: bool) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            kind = "hedged attempt" if hedged else "attempt"
            self.log.debug("%s %s %d -> %s", method, kind, attempt, endpoint.describe())

    def on_retry(self, method: str, attempt: int, code: grpc.StatusCode, delay: float) -> None:
        self.log.info(
            "%s attempt %d failed with %s; retrying in %.3f s", method, attempt, code.name, delay
        )

    def on_failover(self, method: str, failed: Endpoint, next_endpoint: Endpoint) -> None:
        self.log.info(
            "%s fails over from %s to %s", method, failed.describe(), next_endpoint.describe()
        )

    def on_hedge(self, method: str, endpoint: Endpoint, attempt: int) -> None:
        self.log.info("%s hedged attempt %d -> %s", method, attempt, endpoint.describe())

    def on_throttled(self, method: str) -> None:
        self.log.warning("%s: retry not sent, retries to this target are throttled", method)

    def on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        self.log.warning("endpoint %s ejected for %.2f s", endpoint.describe(), duration)

    def on_spill(self, method: str, reason: str) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s spills from the caller's node (%s)", method, reason)

    def on_endpoints_changed(self, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> None:
        self.log.info(
            "endpoints: %s -> %s",
            ", ".join(e.address for e in old) or "none",
            ", ".join(e.address for e in new) or "none",
        )


@dataclass
class ClientStats:
    """Counters a client keeps (``client.stats``), for tests, benchmarks and dashboards.

    Plain integers, updated without locks: exact for the asyncio client,
    approximate under heavy multi-threaded use of the blocking client.
    """

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failovers: int = 0
    hedges: int = 0
    hedge_wins: int = 0
    """Calls answered by a hedged attempt rather than the first."""
    throttled: int = 0
    pushbacks: int = 0
    ejections: int = 0
    endpoint_changes: int = 0
    spills_full: int = 0
    """Calls sent past the caller's node because its replicas reported being full."""
    spills_slow: int = 0
    """... because they answered slower than the next tier (``LocalityPolicy``)."""
    spills_refused: int = 0
    """Attempts a replica refused unprocessed (admission control), sent on at once."""

    @property
    def spills(self) -> int:
        return self.spills_full + self.spills_slow + self.spills_refused

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ClientEvents:
    """Where a client's events go: counted in ``stats``, then told to every observer.

    The call state machine and the client core raise events only through
    these typed methods; an observer's exception is logged, never raised.
    """

    __slots__ = ("enabled", "observers", "stats")

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self.stats = ClientStats()
        self.observers: tuple[CallObserver, ...] = tuple(observers)
        self.enabled = bool(self.observers)
        """Whether observers listen (else per-call records need not be built)."""

    def call_started(self, call: CallInfo | None = None) -> None:
        """A call starts; ``call`` is given when there are observers (see ``enabled``)."""
        self.stats.calls += 1
        if call is not None and self.observers:
            self._each("on_call_started", lambda o: o.on_call_started(call))

    def attempt_started(self, attempt: AttemptInfo) -> None:
        if self.observers:
            self._each("on_attempt_started", lambda o: o.on_attempt_started(attempt))

    def attempt_finished(self, event: AttemptFinished) -> None:
        if self.observers:
            self._each("on_attempt_finished", lambda o: o.on_attempt_finished(event))

    def call_finished(self, event: CallFinished) -> None:
        if self.observers:
            self._each("on_call_finished", lambda o: o.on_call_finished(event))

    def attempt(
        self,
        method: str,
        endpoint: Endpoint,
        number: int,
        *,
        hedged: bool,
        previous: Endpoint | None,
    ) -> None:
        """Attempt ``number`` starts; ``previous`` is where the last failed attempt went."""
        stats = self.stats
        stats.attempts += 1
        failover = not hedged and previous is not None and previous.address != endpoint.address
        if hedged:
            stats.hedges += 1
        elif failover:
            stats.failovers += 1
        if not self.observers:
            return
        if failover:
            assert previous is not None
            self._each("on_failover", lambda o: o.on_failover(method, previous, endpoint))
        self._each("on_attempt", lambda o: o.on_attempt(endpoint, method, number, hedged))
        if hedged:
            self._each("on_hedge", lambda o: o.on_hedge(method, endpoint, number))

    def retry(
        self, method: str, attempt: int, code: grpc.StatusCode, delay: float, *, pushback: bool
    ) -> None:
        """Attempt ``attempt`` failed with ``code``; the next starts in ``delay`` seconds."""
        self.stats.retries += 1
        if pushback:
            self.stats.pushbacks += 1
        if self.observers:
            self._each("on_retry", lambda o: o.on_retry(method, attempt, code, delay))

    def throttled(self, method: str) -> None:
        self.stats.throttled += 1
        if self.observers:
            self._each("on_throttled", lambda o: o.on_throttled(method))

    def spill(self, method: str, reason: str) -> None:
        stats = self.stats
        if reason == "full":
            stats.spills_full += 1
        elif reason == "slow":
            stats.spills_slow += 1
        else:
            stats.spills_refused += 1
        if self.observers:
            self._each("on_spill", lambda o: o.on_spill(method, reason))

    def hedge_won(self) -> None:
        self.stats.hedge_wins += 1

    def ejection(self, endpoint: Endpoint, duration: float) -> None:
        self.stats.ejections += 1
        if self.observers:
            self._each("on_ejection", lambda o: o.on_ejection(endpoint, duration))

    def endpoints_changed(self, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> None:
        self.stats.endpoint_changes += 1
        if self.observers:
            self._each("on_endpoints_changed", lambda o: o.on_endpoints_changed(old, new))

    def _each(self, event: str, call: Callable[[CallObserver], object]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:
                if not hasattr(observer, event):
                    continue  # an observer written before this event existed
                log.exception("observer %r failed in %s", observer, event)
