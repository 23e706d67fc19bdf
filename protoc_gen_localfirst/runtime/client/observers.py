"""Hooks for metrics and logs: what a client's calls do, as events and counters.

Pass observers to a client (``AsyncClient(target, observers=[LoggingObserver()])``);
every client also keeps counters in ``client.stats``. Observers are called
synchronously on the calling thread or event loop: keep them cheap and never
raise from them (an exception is logged and swallowed). Subclass
``BaseObserver`` and override only the events you need; any object with the
methods of ``CallObserver`` works too.

OpenTelemetry: no adapter ships here (``opentelemetry-api`` is not a
dependency); an observer that increments OTel counters from these events is
a few lines, see ``CallObserver``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import grpc

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

log = logging.getLogger("protoc_gen_localfirst.calls")


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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def notify(observers: Sequence[CallObserver], event: str, *args: object) -> None:
    """Call ``event`` on every observer; an observer's exception is logged, not raised."""
    for observer in observers:
        try:
            getattr(observer, event)(*args)
        except Exception:
            log.exception("observer %r failed in %s", observer, event)
