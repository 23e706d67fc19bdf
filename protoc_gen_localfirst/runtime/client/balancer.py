"""Locality ordering and endpoint health: which replica an attempt goes to.

Sans-IO: no channels, no sockets; time and chance are injected so the
ordering is tested deterministically. How much the caller's own node keeps
under load is ``load``'s job; this module orders and keeps endpoint health.

Threads: discovery threads (and node probes) change the endpoint set while
calls order it. A change is published as one immutable ``_View`` (one
assignment), so a call reads a consistent endpoint set without a lock. What
calls change (rotation, health, load accounting, the spill rule) needs no
lock when every call runs on one event loop (the asyncio client:
``Balancer``); ``LockedBalancer`` guards the same methods with one lock for
calls in several threads (the blocking client).

Cost per call, whatever the number of endpoints: ``plan()`` makes an
``Order`` that finds an attempt's endpoint when asked (tiers are few; an
endpoint set with ejected endpoints, rare, is sorted in full), and an answer
updates its endpoint's and its tier's latency averages in place. What grows
with the endpoint set is done when discovery changes it, not per call.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from protoc_gen_localfirst.runtime.client.load import (
    SPILL_FULL,
    SPILL_SLOW,
    EndpointLoad,
    LocalityPolicy,
    SpillController,
)
from protoc_gen_localfirst.runtime.client.order import Order
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import NO_NODE_WARNING, missing_node_warning
from protoc_gen_localfirst.runtime.loadreport import LoadReport, decode_cached

log = logging.getLogger("protoc_gen_localfirst.balancer")

REPORT_INTERVAL = 0.010
"""Seconds between load reports an endpoint's answers are read for (the rest are skipped).

Reading an answer's trailers costs a call about 15 us of CPU, so at 2 ms a
client calling one replica back to back paid it on every third call. 10 ms
is still far fresher than the reports' ``report_ttl`` (2 s) and than
grpc's own weighted_round_robin, which updates weights once a second; the
client's own calls in flight are counted exactly in between, and a refusal's
report is always read."""


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
    stopping_until: float = 0.0
    """The endpoint refused a call because it is shutting down: until then, an answer
    to a call sent before that does not end its ejection."""


@dataclass(frozen=True, slots=True, eq=False)
class _View:
    """The endpoint set as calls see it, replaced whole when discovery changes it."""

    ready: tuple[Endpoint, ...] = ()
    tiers: tuple[tuple[Endpoint, ...], ...] = ()
    """Ready endpoints by locality tier, nearest first."""
    levels: tuple[int, ...] = ()
    """The tier (0 = our node, 1 = our zone, 2 = the rest) of each entry of ``tiers``."""
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
        """The lowest latency any endpoint showed (a lower bound of every average)."""
        self._tier_latency = [_TierLatency(), _TierLatency(), _TierLatency()]
        """Each tier's answers' latency average (the spill rule compares the local
        tier's with the next one's)."""
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
        load = {e.address: old.get(e.address) or EndpointLoad() for e in self._all}
        for endpoint in self._all:
            load[endpoint.address].tier = self.tier(endpoint)
        levels = tuple(sorted(tiers))
        self._view = _View(
            ready=ready,
            tiers=tuple(tuple(tiers[level]) for level in levels),
            levels=levels,
            load=load,
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
        return list(self.plan()[0])

    def plan(self) -> tuple[Order, str | None]:
        """One call's endpoint order, and why its local tier was passed over (or None)."""
        view = self._view
        self._turn += 1
        departed = self._departed
        while departed:  # endpoints that left: a returning one starts healthy
            self._health.pop(departed.popleft(), None)
        now = self._clock()
        if not self._health:  # the common case: the tiers as discovery last built them
            return self._order(view.tiers, view.levels, view.load, now)
        # Ejected endpoints go last, soonest back first: O(n), only while some are.
        tiers: dict[int, list[Endpoint]] = {}
        ejected: list[Endpoint] = []
        for endpoint in view.ready:
            if self._is_ejected(endpoint, now):
                ejected.append(endpoint)
            else:
                tiers.setdefault(self.tier(endpoint), []).append(endpoint)
        health = self._health
        ejected.sort(key=lambda e: (health[e.address].ejected_until, self.tier(e)))
        levels = tuple(sorted(tiers))
        groups = tuple(tiers[level] for level in levels)
        return self._order(groups, levels, view.load, now, last=tuple(ejected))

    def _order(
        self,
        tiers: tuple[Sequence[Endpoint], ...],
        levels: tuple[int, ...],
        load: dict[str, EndpointLoad],
        now: float,
        last: tuple[Endpoint, ...] = (),
    ) -> tuple[Order, str | None]:
        """The call's ``Order`` over ``tiers`` (then ``last``): O(number of tiers)."""
        turn = self._turn
        ttl = self.locality.report_ttl
        swapped = 0
        for position, group in enumerate(tiers):  # power of two choices, per tier
            size = len(group)
            if size > 1:
                first = load[group[turn % size].address].cost(now, ttl)
                if load[group[(turn + 1) % size].address].cost(now, ttl) < first:
                    swapped |= 1 << position
        spill = None
        if len(tiers) > 1 and self.locality.spill:  # else nothing to spill to
            spill = self._spill_reason(tiers, levels, load, now)
        if spill is not None:  # the next tier first; the tiers' two choices go with them
            tiers = (tiers[1], tiers[0], *tiers[2:])
            swapped = (swapped & ~3) | (swapped & 1) << 1 | (swapped & 2) >> 1
        return Order(tiers, turn, swapped, last), spill

    def _spill_reason(
        self,
        tiers: Sequence[Sequence[Endpoint]],
        levels: Sequence[int],
        load: dict[str, EndpointLoad],
        now: float,
    ) -> str | None:
        """Why the caller's own tier should not take this call, or None (it should).

        Costs O(replicas on the caller's node), not O(endpoints).
        """
        if levels[0] != 0:  # no replica on our node: nothing local to pass over
            return None
        ttl = self.locality.report_ttl
        full = True
        for endpoint in tiers[0]:
            utilization = load[endpoint.address].utilization(now, ttl)
            if utilization is None:  # no report to go by: the latency rule decides
                return SPILL_SLOW if self._chance() >= self._spill.local_share else None
            full = full and utilization > 1.0
        return SPILL_FULL if full else None

    def attempt_started(self, endpoint: Endpoint, now: float) -> bool:
        """An attempt to ``endpoint`` starts at ``now``; whether its answer's trailers
        are worth reading: the endpoint's node is not known yet (servers name it
        there), or its last load report is older than ``REPORT_INTERVAL``. Most
        answers' are not (reading them costs the call CPU)."""
        load = self._view.load.get(endpoint.address)
        if load is None:
            return endpoint.node is None
        load.outstanding += 1
        return endpoint.node is None or now - load.reported_at >= REPORT_INTERVAL

    def attempt_ended(
        self,
        endpoint: Endpoint,
        latency: float | None,
        report: LoadReport | bytes | None,
        *,
        ran: bool = True,
        ok: bool = False,
    ) -> None:
        """An attempt ended: its latency (unary answers only) and the server's load report.

        ``report`` may be the report's bytes as they came in the trailers: they are
        decoded only when the endpoint's last report is older than
        ``REPORT_INTERVAL`` (a refusal's always: it shows the replica full).
        ``ran``: whether the server counted the call in its report (not so for a
        refusal). ``ok``: the attempt succeeded, so the endpoint is healthy again.
        """
        view = self._view
        load = view.load.get(endpoint.address)
        if ok and self._health:
            self._forget_failures(endpoint)
        if load is None:
            return
        if load.outstanding:
            load.outstanding -= 1
        now = self._clock()
        if report is not None:
            if isinstance(report, bytes):
                fresh = not ran or now - load.reported_at >= REPORT_INTERVAL
                report = decode_cached(report) if fresh else None
            if report is not None:
                load.reported(report, now, finished_call=ran)
        if latency is None:
            return
        policy = self.locality
        load.sample(latency, now, policy)
        lowest = self._lowest_sample
        if lowest is None or latency < lowest:
            lowest = self._lowest_sample = latency
        tier = self._tier_latency[load.tier]
        if tier.mean is None:
            tier.mean = latency
        else:  # the tier's average: a sample weighs more the longer since the last one
            weight = 0.5 ** ((now - tier.sampled_at) / policy.latency_half_life)
            tier.mean = tier.mean * weight + latency * (1 - weight)
        tier.sampled_at = now
        if load.tier != 0:
            return
        floor = self._floor
        if floor is None or latency < floor:
            self._floor = latency
        # Every latency average is at least the lowest sample of any endpoint: until
        # that much time has passed, the spill rule would not change.
        if now - self._spill.changed_at >= lowest:
            levels = view.levels
            next_tier = self._tier_latency[levels[1]].mean if len(levels) > 1 else None
            self._spill.observe(self._tier_latency[0].mean, next_tier, self._floor, now)

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
        if self._health:  # the common case (nothing ejected) has nothing to forget
            self._forget_failures(endpoint)

    def _forget_failures(self, endpoint: Endpoint) -> None:
        health = self._health.get(endpoint.address)
        if health is None or health.stopping_until > self._clock():
            return  # a late answer from a server that said it is stopping
        del self._health[endpoint.address]
        if health.consecutive_failures:
            log.info("endpoint %s is answering again", endpoint.describe())

    def record_connection_failure(self, endpoint: Endpoint) -> None:
        """An attempt could not reach ``endpoint``: eject it for a growing time."""
        if self._record_failure(endpoint, "is unreachable") and self._on_unreachable is not None:
            self._on_unreachable(endpoint)

    def record_stopping(self, endpoint: Endpoint) -> None:
        """``endpoint`` refused a call because its server is shutting down (drain).

        Ejected for ``EjectionPolicy.max_time`` at once, not the first failure's
        short time: the server refuses calls for a while and then stops, and a call
        that reaches it as grpc stops is cancelled (CANCELLED, not safely
        retryable); answers to calls sent before the refusal do not end it.
        """
        recorded = self._record_failure(endpoint, "is shutting down", stopping=True)
        if recorded and self._on_unreachable is not None:
            self._on_unreachable(endpoint)

    def record_timeout(self, endpoint: Endpoint) -> None:
        """An attempt to ``endpoint`` ran out of its per-attempt time: eject it the same way.

        A replica that accepts connections but does not answer (frozen with
        SIGSTOP, stuck in GC, overloaded) stops getting first attempts.
        """
        self._record_failure(endpoint, "does not answer in time")

    def _record_failure(self, endpoint: Endpoint, what: str, *, stopping: bool = False) -> bool:
        recorded = self._failed(endpoint, stopping=stopping)
        if recorded is None:
            return False
        first, duration = recorded
        if first:
            log.warning("endpoint %s %s; trying others first", endpoint.describe(), what)
        if self.on_ejection is not None:
            self.on_ejection(endpoint, duration)
        return True

    def _failed(self, endpoint: Endpoint, *, stopping: bool = False) -> tuple[bool, float] | None:
        """Eject ``endpoint`` (first failure?, for how long), None if it is not ready."""
        if endpoint.address not in self._view.addresses:
            return None
        health = self._health.setdefault(endpoint.address, _Health())
        health.consecutive_failures += 1
        duration = self._ejection.duration(health.consecutive_failures)
        if stopping:
            duration = self._ejection.max_time
            health.stopping_until = self._clock() + duration
        health.ejected_until = self._clock() + duration
        return health.consecutive_failures == 1, duration


class LockedBalancer(Balancer):
    """``Balancer`` for calls in several threads (the blocking client): what calls
    change is changed under one lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._call_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def plan(self) -> tuple[Order, str | None]:
        with self._call_lock:
            return super().plan()

    def attempt_started(self, endpoint: Endpoint, now: float) -> bool:
        with self._call_lock:
            return super().attempt_started(endpoint, now)

    def attempt_ended(
        self,
        endpoint: Endpoint,
        latency: float | None,
        report: LoadReport | bytes | None,
        *,
        ran: bool = True,
        ok: bool = False,
    ) -> None:
        with self._call_lock:
            super().attempt_ended(endpoint, latency, report, ran=ran, ok=ok)

    def record_success(self, endpoint: Endpoint) -> None:
        with self._call_lock:
            super().record_success(endpoint)

    def _failed(self, endpoint: Endpoint, *, stopping: bool = False) -> tuple[bool, float] | None:
        with self._call_lock:
            return super()._failed(endpoint, stopping=stopping)


class _TierLatency:
    """A tier's answers' latency, averaged with ``LocalityPolicy.latency_half_life``."""

    __slots__ = ("mean", "sampled_at")

    def __init__(self) -> None:
        self.mean: float | None = None
        self.sampled_at = 0.0
