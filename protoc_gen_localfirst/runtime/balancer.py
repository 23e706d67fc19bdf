"""Locality ordering and endpoint health: which replica an attempt goes to.

Sans-IO: no channels, no sockets; time and randomness are injected so the
ordering is tested deterministically. The client owns the channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protoc_gen_localfirst.runtime.endpoints import Endpoint

log = logging.getLogger("protoc_gen_localfirst.balancer")


@dataclass(frozen=True)
class EjectionPolicy:
    """How long an endpoint that keeps failing to connect is moved to the back.

    An endpoint whose attempts fail with a connection-level error is ejected for
    ``base * 2**(failures-1)`` seconds, at most ``max_time``. After that it is
    tried again by a real call (which fails over if it is still down), so a
    replica that returns gets its traffic back within ``max_time``.
    """

    base_time: float = 0.5
    max_time: float = 5.0

    def duration(self, consecutive_failures: int) -> float:
        exponent = min(consecutive_failures - 1, 32)
        return float(min(self.base_time * 2**exponent, self.max_time))


@dataclass
class _Health:
    consecutive_failures: int = 0
    ejected_until: float = 0.0


class Balancer:
    """Orders endpoints for one call: same node, then same zone, then the rest.

    Within a tier the starting point rotates call by call, spreading load over
    the replicas of that tier. Ejected endpoints go last (soonest to return
    first), but are still tried: with every replica ejected, a call still gets
    its attempts rather than failing without trying.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        node: str | None,
        zone: str | None,
        ejection: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.zone = zone
        self._ejection = ejection or EjectionPolicy()
        self._clock = clock
        self._endpoints: tuple[Endpoint, ...] = ()
        self._health: dict[str, _Health] = {}
        self._turn = 0
        self.update(endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; health of endpoints that stay is kept."""
        self._endpoints = tuple(e for e in endpoints if e.ready)
        kept = {e.address for e in self._endpoints}
        self._health = {a: h for a, h in self._health.items() if a in kept}

    def tier(self, endpoint: Endpoint) -> int:
        """0 = caller's node, 1 = caller's zone, 2 = elsewhere."""
        if self.node is not None and endpoint.node == self.node:
            return 0
        if self.zone is not None and endpoint.zone == self.zone:
            return 1
        return 2

    def order(self) -> list[Endpoint]:
        """The order in which one call's attempts should try the endpoints."""
        now = self._clock()
        self._turn += 1
        tiers: dict[int, list[Endpoint]] = {}
        ejected: list[Endpoint] = []
        for endpoint in self._endpoints:
            if self.is_ejected(endpoint, now):
                ejected.append(endpoint)
            else:
                tiers.setdefault(self.tier(endpoint), []).append(endpoint)
        ordered: list[Endpoint] = []
        for level in sorted(tiers):
            members = tiers[level]
            start = self._turn % len(members)
            ordered.extend(members[start:] + members[:start])
        ejected.sort(key=lambda e: (self._health[e.address].ejected_until, self.tier(e)))
        return ordered + ejected

    def is_ejected(self, endpoint: Endpoint, now: float | None = None) -> bool:
        health = self._health.get(endpoint.address)
        if health is None:
            return False
        return health.ejected_until > (self._clock() if now is None else now)

    def record_success(self, endpoint: Endpoint) -> None:
        health = self._health.pop(endpoint.address, None)
        if health is not None and health.consecutive_failures:
            log.info("endpoint %s is answering again", endpoint.describe())

    def record_connection_failure(self, endpoint: Endpoint) -> None:
        """An attempt could not reach ``endpoint``: eject it for a growing time."""
        if endpoint.address not in {e.address for e in self._endpoints}:
            return
        health = self._health.setdefault(endpoint.address, _Health())
        health.consecutive_failures += 1
        duration = self._ejection.duration(health.consecutive_failures)
        health.ejected_until = self._clock() + duration
        if health.consecutive_failures == 1:
            log.warning("endpoint %s is unreachable; trying others first", endpoint.describe())
