"""Locality ordering and endpoint health: which replica an attempt goes to.

Sans-IO: no channels, no sockets; time is injected so the ordering is tested
deterministically. Thread-safe: discovery threads update the set while calls
(on an event loop or in threads) order it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

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
    its attempts rather than failing without trying. Endpoints that are not
    ready (terminating, failing readiness) get no calls at all.

    Nodes: an endpoint whose source knows no node (DNS) gets the node its
    server announced (``learn_node``). Zone: when none is given, the zone of
    an endpoint on our own node is ours.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        node: str | None,
        zone: str | None,
        ejection: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_unreachable: Callable[[Endpoint], None] | None = None,
        on_ejection: Callable[[Endpoint, float], None] | None = None,
    ) -> None:
        self.node = node
        self._explicit_zone = zone
        self.zone = zone
        self._ejection = ejection or EjectionPolicy()
        self._clock = clock
        self._on_unreachable = on_unreachable
        self.on_ejection = on_ejection
        self._tiers: tuple[tuple[Endpoint, ...], ...] = ()
        self._lock = threading.Lock()
        self._discovered: tuple[Endpoint, ...] = ()
        self._all: tuple[Endpoint, ...] = ()
        self._ready: tuple[Endpoint, ...] = ()
        self._learned: dict[str, str] = {}
        self._health: dict[str, _Health] = {}
        self._turn = 0
        self.update(endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every known endpoint, ready or not, with learned nodes filled in."""
        return self._all

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return self._ready

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; health and learned nodes of those that stay are kept."""
        with self._lock:
            self._discovered = tuple(endpoints)
            present = {e.address for e in self._discovered}
            self._learned = {a: n for a, n in self._learned.items() if a in present}
            self._rebuild()
            ready = {e.address for e in self._ready}
            self._health = {a: h for a, h in self._health.items() if a in ready}

    def learn_node(self, address: str, node: str) -> bool:
        """The server at ``address`` says it runs on ``node``; True if that is news."""
        with self._lock:
            if self._learned.get(address) == node:
                return False
            known = [e for e in self._discovered if e.address == address]
            if not known or known[0].node is not None:
                return False  # gone, or the source (EndpointSlice) already knows
            self._learned[address] = node
            self._rebuild()
        log.info("endpoint %s runs on node %s", address, node)
        return True

    def _rebuild(self) -> None:
        self._all = tuple(
            dataclasses.replace(e, node=self._learned[e.address])
            if e.node is None and e.address in self._learned
            else e
            for e in self._discovered
        )
        self._ready = tuple(e for e in self._all if e.ready)
        if self._explicit_zone is None:
            self.zone = next(
                (e.zone for e in self._all if e.zone and self.node and e.node == self.node), None
            )
        tiers: dict[int, list[Endpoint]] = {}
        for endpoint in self._ready:
            tiers.setdefault(self.tier(endpoint), []).append(endpoint)
        self._tiers = tuple(tuple(tiers[level]) for level in sorted(tiers))

    def tier(self, endpoint: Endpoint) -> int:
        """0 = caller's node, 1 = caller's zone, 2 = elsewhere."""
        if self.node is not None and endpoint.node == self.node:
            return 0
        if self.zone is not None and endpoint.zone == self.zone:
            return 1
        return 2

    def order(self) -> list[Endpoint]:
        """The order in which one call's attempts should try the ready endpoints."""
        with self._lock:
            self._turn += 1
            if not self._health:  # nothing ejected: the tiers computed on update
                fast: list[Endpoint] = []
                for group in self._tiers:
                    first = self._turn % len(group)
                    fast.extend(group[first:])
                    fast.extend(group[:first])
                return fast
            now = self._clock()
            tiers: dict[int, list[Endpoint]] = {}
            ejected: list[Endpoint] = []
            for endpoint in self._ready:
                if self._is_ejected(endpoint, now):
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

    def is_ejected(self, endpoint: Endpoint) -> bool:
        with self._lock:
            return self._is_ejected(endpoint, self._clock())

    def _is_ejected(self, endpoint: Endpoint, now: float) -> bool:
        health = self._health.get(endpoint.address)
        return health is not None and health.ejected_until > now

    def record_success(self, endpoint: Endpoint) -> None:
        with self._lock:
            health = self._health.pop(endpoint.address, None)
        if health is not None and health.consecutive_failures:
            log.info("endpoint %s is answering again", endpoint.describe())

    def record_connection_failure(self, endpoint: Endpoint) -> None:
        """An attempt could not reach ``endpoint``: eject it for a growing time."""
        if self._record_failure(endpoint, "is unreachable") and self._on_unreachable is not None:
            self._on_unreachable(endpoint)

    def record_timeout(self, endpoint: Endpoint) -> None:
        """An attempt to ``endpoint`` ran out of its per-attempt time: eject it the same way.

        A replica that accepts connections but does not answer (frozen with
        SIGSTOP, stuck in GC, overloaded) stops getting first attempts.
        """
        self._record_failure(endpoint, "does not answer in time")

    def _record_failure(self, endpoint: Endpoint, what: str) -> bool:
        with self._lock:
            if all(e.address != endpoint.address for e in self._ready):
                return False
            health = self._health.setdefault(endpoint.address, _Health())
            health.consecutive_failures += 1
            duration = self._ejection.duration(health.consecutive_failures)
            health.ejected_until = self._clock() + duration
            first = health.consecutive_failures == 1
        if first:
            log.warning("endpoint %s %s; trying others first", endpoint.describe(), what)
        if self.on_ejection is not None:
            self.on_ejection(endpoint, duration)
        return True
