"""Locality ordering and endpoint health: which replica an attempt goes to.

Sans-IO: no channels, no sockets; time and chance are injected so the
ordering is tested deterministically. How much the caller's own node keeps
under load is ``load``'s job; this module orders and keeps endpoint health.

Threads: discovery threads (and node probes) change the endpoint set while
calls order it. A change is published as one immutable ``_View`` (one
assignment), so a call reads a consistent endpoint set without a lock. What
calls change (rotation, health, load accounting, the spill rule) is guarded
by ``call_lock`` when calls run in several threads (the blocking client),
and by nothing when they all run on one event loop (the asyncio client:
``Balancer(..., call_lock=None)``): the same code either way.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from protoc_gen_localfirst.runtime.client.load import (
    SPILL_FULL,
    SPILL_SLOW,
    EndpointLoad,
    LocalityPolicy,
    SpillController,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import NO_NODE_WARNING, missing_node_warning
from protoc_gen_localfirst.runtime.loadreport import LoadReport

log = logging.getLogger("protoc_gen_localfirst.balancer")

REPORT_INTERVAL = 0.002
"""Seconds between load reports an endpoint's answers are read for (the rest are skipped)."""


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


@dataclass(frozen=True, slots=True, eq=False)
class _View:
    """The endpoint set as calls see it, replaced whole when discovery changes it."""

    ready: tuple[Endpoint, ...] = ()
    tiers: tuple[tuple[Endpoint, ...], ...] = ()
    """Ready endpoints by locality tier, nearest first."""
    load: dict[str, EndpointLoad] = dataclasses.field(default_factory=dict)
    """Every known endpoint's load (the objects stay while the endpoint does)."""
    addresses: frozenset[str] = frozenset()
    """Of the ready endpoints."""


class Balancer:
    """Orders endpoints for one call: same node, then same zone, then the rest.

    Within a tier the starting point rotates call by call, spreading load over
    the replicas of that tier, and of the first two the less loaded goes
    first (power of two choices). When the caller's node is saturated
    (``load.LocalityPolicy``), its tier moves behind the next one for this
    call: the call spills. Ejected endpoints go last (soonest to return
    first), but are still tried: with every replica ejected, a call still gets
    its attempts rather than failing without trying. Endpoints that are not
    ready (terminating, failing readiness) get no calls at all.

    Nodes: an endpoint whose source knows no node (DNS) gets the node its
    server announced (``learn_node``). Zone: when none is given, the zone of
    an endpoint on our own node is ours.

    Warnings, once per balancer (one per client): no ``node`` at all
    (``identity.NO_NODE_WARNING``), and a node no endpoint runs on once every
    endpoint's node is known (``identity.missing_node_warning``).
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
        locality: LocalityPolicy | None = None,
        chance: Callable[[], float] = random.random,
        call_lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.node = node
        self._explicit_zone = zone
        self.zone = zone
        self._ejection = ejection or EjectionPolicy()
        self._clock = clock
        self._on_unreachable = on_unreachable
        self.on_ejection = on_ejection
        self._lock = threading.Lock()
        """Between writers of the endpoint set (discovery, node learning, probes)."""
        self._call_lock = call_lock
        """Between calls in several threads (None: calls run on one event loop)."""
        self._view = _View()
        self._discovered: tuple[Endpoint, ...] = ()
        self._all: tuple[Endpoint, ...] = ()
        self._learned: dict[str, str] = {}
        self._health: dict[str, _Health] = {}
        """Changed by calls only; entries of endpoints gone are dropped by the next plan."""
        self._departed: collections.deque[str] = collections.deque()
        """Addresses that left the ready set, whose health the next plan forgets
        (a deque: discovery appends while calls take, each atomic)."""
        self._turn = 0
        self.locality = locality or LocalityPolicy()
        self._chance = chance
        self._spill = SpillController(self.locality)
        self._ready_before: set[str] = set()
        self.version = 0
        """Counts changes of the ready endpoint set (calls waiting for new endpoints watch it)."""
        self._floor: float | None = None
        """The lowest latency the local tier showed: its no-load round trip."""
        self._lowest_sample: float | None = None
        """The lowest latency any endpoint showed (a lower bound of every EWMA)."""
        self._node_checked = node is None
        """Whether the missing-node check is settled: warned, or our node was seen."""
        self._node_warning: str | None = None
        if node is None:
            log.warning(NO_NODE_WARNING)
        self.update(endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every known endpoint, ready or not, with learned nodes filled in."""
        return self._all

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return self._view.ready

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; health and learned nodes of those that stay are kept."""
        with self._lock:
            self._discovered = tuple(endpoints)
            present = {e.address for e in self._discovered}
            self._learned = {a: n for a, n in self._learned.items() if a in present}
            self._rebuild()
            ready = set(self._view.addresses)
            if ready != self._ready_before:
                self._departed.extend(self._ready_before - ready)
                self._ready_before = ready
                self.version += 1
        self._log_node_warning()

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
        self._log_node_warning()
        return True

    def _log_node_warning(self) -> None:
        """Log what ``_rebuild`` found wrong with our node, outside the lock."""
        with self._lock:
            warning, self._node_warning = self._node_warning, None
        if warning is not None:
            log.warning(warning)

    def _rebuild(self) -> None:
        """A new ``_View`` from the discovered endpoints and the learned nodes (writers only)."""
        self._all = tuple(
            dataclasses.replace(e, node=self._learned[e.address])
            if e.node is None and e.address in self._learned
            else e
            for e in self._discovered
        )
        ready = tuple(e for e in self._all if e.ready)
        if not self._node_checked:
            # Settled by the first sight of our node (a local replica that is
            # replaced later leaves a gap that is no misspelling) or by the warning.
            self._node_warning = missing_node_warning(self.node, (e.node for e in self._all))
            self._node_checked = self._node_warning is not None or any(
                e.node == self.node for e in self._all
            )
        if self._explicit_zone is None:
            self.zone = next(
                (e.zone for e in self._all if e.zone and self.node and e.node == self.node), None
            )
        tiers: dict[int, list[Endpoint]] = {}
        for endpoint in ready:
            tiers.setdefault(self.tier(endpoint), []).append(endpoint)
        old = self._view.load
        self._view = _View(
            ready=ready,
            tiers=tuple(tuple(tiers[level]) for level in sorted(tiers)),
            load={e.address: old.get(e.address) or EndpointLoad() for e in self._all},
            addresses=frozenset(e.address for e in ready),
        )

    def tier(self, endpoint: Endpoint) -> int:
        """0 = caller's node, 1 = caller's zone, 2 = elsewhere."""
        if self.node is not None and endpoint.node == self.node:
            return 0
        if self.zone is not None and endpoint.zone == self.zone:
            return 1
        return 2

    def order(self) -> list[Endpoint]:
        """The order in which one call's attempts should try the ready endpoints."""
        return self.plan()[0]

    def plan(self) -> tuple[list[Endpoint], str | None]:
        """One call's endpoint order, and why its local tier was passed over (or None)."""
        lock = self._call_lock
        if lock is None:
            return self._plan(self._view)
        with lock:
            return self._plan(self._view)

    def _plan(self, view: _View) -> tuple[list[Endpoint], str | None]:
        self._turn += 1
        now = self._clock()
        tiers, ejected = self._available_tiers(view, now)
        load = view.load
        ordered = [self._two_choices(group, load, now) for group in tiers]
        spill = self._spill_reason(tiers, load, now)
        if spill is not None:
            ordered[0], ordered[1] = ordered[1], ordered[0]
        flat = [endpoint for group in ordered for endpoint in group]
        if ejected:
            health = self._health
            ejected.sort(key=lambda e: (health[e.address].ejected_until, self.tier(e)))
            flat.extend(ejected)
        return flat, spill

    def _available_tiers(
        self, view: _View, now: float
    ) -> tuple[list[list[Endpoint]], list[Endpoint]]:
        """Ready endpoints by tier (nearest first, rotated), and the ejected ones."""
        health = self._health
        departed = self._departed
        while departed:  # endpoints that left: a returning one starts healthy
            health.pop(departed.popleft(), None)
        if not health:  # nothing ejected: the tiers computed on update
            return [_rotated(group, self._turn) for group in view.tiers], []
        tiers: dict[int, list[Endpoint]] = {}
        ejected: list[Endpoint] = []
        for endpoint in view.ready:
            if self._is_ejected(endpoint, now):
                ejected.append(endpoint)
            else:
                tiers.setdefault(self.tier(endpoint), []).append(endpoint)
        return [_rotated(tiers[level], self._turn) for level in sorted(tiers)], ejected

    def _two_choices(
        self, group: list[Endpoint], load: dict[str, EndpointLoad], now: float
    ) -> list[Endpoint]:
        """Of the (rotated) first two, the less loaded first."""
        if len(group) > 1:
            ttl = self.locality.report_ttl
            first = load[group[0].address].cost(now, ttl)
            if load[group[1].address].cost(now, ttl) < first:
                group[0], group[1] = group[1], group[0]
        return group

    def _spill_reason(
        self, tiers: list[list[Endpoint]], load: dict[str, EndpointLoad], now: float
    ) -> str | None:
        """Why the caller's own tier should not take this call, or None (it should)."""
        if not self.locality.spill or len(tiers) < 2 or self.tier(tiers[0][0]) != 0:
            return None
        ttl = self.locality.report_ttl
        local = [load[e.address].utilization(now, ttl) for e in tiers[0]]
        if all(u is not None for u in local):  # the servers' limits decide
            return SPILL_FULL if all(u > 1.0 for u in local if u is not None) else None
        if self._chance() >= self._spill.local_share:
            return SPILL_SLOW
        return None

    def attempt_started(self, endpoint: Endpoint) -> None:
        lock = self._call_lock
        if lock is None:
            self._attempt_started(endpoint)
            return
        with lock:
            self._attempt_started(endpoint)

    def _attempt_started(self, endpoint: Endpoint) -> None:
        load = self._view.load.get(endpoint.address)
        if load is not None:
            load.outstanding += 1

    def attempt_ended(
        self,
        endpoint: Endpoint,
        latency: float | None,
        report: LoadReport | None,
        *,
        ran: bool = True,
    ) -> None:
        """An attempt ended: its latency (unary answers only) and the server's load report.

        ``ran``: whether the server counted the call in its report (not so for a refusal).
        """
        lock = self._call_lock
        if lock is None:
            self._attempt_ended(endpoint, latency, report, ran)
            return
        with lock:
            self._attempt_ended(endpoint, latency, report, ran)

    def _attempt_ended(
        self, endpoint: Endpoint, latency: float | None, report: LoadReport | None, ran: bool
    ) -> None:
        view = self._view
        load = view.load.get(endpoint.address)
        if load is None:
            return
        load.outstanding = max(load.outstanding - 1, 0)
        now = self._clock()
        if report is not None:
            load.reported(report, now, finished_call=ran)
        if latency is not None:
            load.sample(latency, now, self.locality)
            lowest = self._lowest_sample
            if lowest is None or latency < lowest:
                lowest = self._lowest_sample = latency
            if self.tier(endpoint) == 0:
                self._local_answered(view, latency, lowest, now)

    def _local_answered(self, view: _View, latency: float, lowest: float, now: float) -> None:
        self._floor = latency if self._floor is None else min(self._floor, latency)
        # Every latency EWMA is at least the lowest sample of any endpoint: until that
        # much time has passed, the spill rule would not change (O(1) per call; the
        # tiers' latencies are looked at about once per local round trip).
        if not self._spill.due(lowest, now):
            return
        load = view.load
        local = [load[e.address].mean_latency for e in view.tiers[0] if e.address in load]
        others = [
            load[e.address].mean_latency
            for group in view.tiers[1:2]
            for e in group
            if e.address in load
        ]
        self._spill.observe(_lowest(local), _lowest(others) if others else None, self._floor, now)

    def wants_report(self, endpoint: Endpoint) -> bool:
        """Whether a new load report of ``endpoint`` is worth decoding now.

        Reports come with every answer; decoding one costs a few microseconds,
        and one per ``REPORT_INTERVAL`` per endpoint keeps the view fresh.
        """
        load = self._view.load.get(endpoint.address)
        return load is not None and self._clock() - load.reported_at >= REPORT_INTERVAL

    def reported(self, endpoint: Endpoint, report: LoadReport) -> None:
        """A load report from outside a call (a health probe, in a probe thread: a few
        attribute writes, atomic each, as a call's own report writes them)."""
        load = self._view.load.get(endpoint.address)
        if load is not None:
            load.reported(report, self._clock(), finished_call=False)

    @property
    def local_share(self) -> float:
        """The share of calls the local tier keeps by the latency rule (1.0: all)."""
        return self._spill.local_share

    def load_of(self, endpoint: Endpoint) -> EndpointLoad | None:
        """What this client knows of ``endpoint``'s load (diagnostics)."""
        return self._view.load.get(endpoint.address)

    def is_ejected(self, endpoint: Endpoint) -> bool:
        return self._is_ejected(endpoint, self._clock())

    def _is_ejected(self, endpoint: Endpoint, now: float) -> bool:
        health = self._health.get(endpoint.address)
        return health is not None and health.ejected_until > now

    def record_success(self, endpoint: Endpoint) -> None:
        if not self._health:  # the common case: nothing to forget
            return
        lock = self._call_lock
        if lock is None:
            health = self._health.pop(endpoint.address, None)
        else:
            with lock:
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
        lock = self._call_lock
        if lock is None:
            recorded = self._failed(endpoint)
        else:
            with lock:
                recorded = self._failed(endpoint)
        if recorded is None:
            return False
        first, duration = recorded
        if first:
            log.warning("endpoint %s %s; trying others first", endpoint.describe(), what)
        if self.on_ejection is not None:
            self.on_ejection(endpoint, duration)
        return True

    def _failed(self, endpoint: Endpoint) -> tuple[bool, float] | None:
        """Eject ``endpoint`` (first failure?, for how long), None if it is not ready."""
        if endpoint.address not in self._view.addresses:
            return None
        health = self._health.setdefault(endpoint.address, _Health())
        health.consecutive_failures += 1
        duration = self._ejection.duration(health.consecutive_failures)
        health.ejected_until = self._clock() + duration
        return health.consecutive_failures == 1, duration


def _rotated(group: tuple[Endpoint, ...] | list[Endpoint], turn: int) -> list[Endpoint]:
    first = turn % len(group)
    return [*group[first:], *group[:first]]


def _lowest(latencies: list[float | None]) -> float | None:
    known = [latency for latency in latencies if latency is not None]
    return min(known) if known else None
