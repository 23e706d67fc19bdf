"""Load-aware locality: how much traffic the caller's own node keeps (sans-IO).

Strict local-first turns a busy node into an outage: every call queues at
the local replica while the others idle. Here the local tier keeps the calls
it can serve and the excess, not everything, spills to the next tier (same
zone, then the rest), from two signals:

1. **What the server reports** (``loadreport``, on every response): calls in
   flight and a concurrency limit (enforced with admission control, else the
   capacity the server estimates from its latency). Reports are shared truth
   across every client process on the node: when the local replica's last
   report, plus the calls this client started since, reaches the limit, the
   next call goes to the next tier at once (reason ``full``). A server that
   refuses a call for overload proves it was not processed, and the call
   moves on at once (reason ``refused``, counted by the call).
2. **What this client sees**, for servers that send no reports: an EWMA of
   each tier's answers' latency (a short half-life, so a queue shows within
   tens of calls while a lone slow answer barely moves it). While the local
   replica answers no slower than the next tier (within
   ``latency_tolerance`` and ``latency_slack``: the cross-node round trip is
   not overload), it keeps everything; when it gets slower, the share it
   keeps shrinks multiplicatively, and grows back additively once it is fast
   again (AIMD, like TCP's congestion window), so many uncoordinated clients
   converge instead of oscillating together (reason ``slow``).

Within a tier the less loaded of two candidates goes first (power of two
choices), by predicted utilization when reported, else by outstanding calls
times latency (Finagle's and Linkerd's cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY, ORCA_REPORT_KEY, LoadReport

SPILL_FULL = "full"
SPILL_SLOW = "slow"
SPILL_REFUSED = "refused"


@dataclass(frozen=True)
class LocalityPolicy:
    """How calls are spread over the locality tiers (same node, same zone, the rest).

    ``spill=False`` is strict local first: every first attempt goes to the
    nearest tier with a ready, not ejected endpoint, however busy it is.
    The defaults need no tuning for the common case: servers of this
    project report their load; for other servers the latency rule applies.
    """

    spill: bool = True
    report_ttl: float = 2.0
    """Seconds a server's load report is trusted (a newer one replaces it)."""
    latency_tolerance: float = 1.25
    """The local tier keeps its share while its latency is at most this factor ..."""
    latency_slack: float = 0.001
    """... of the next tier's, plus this many seconds."""
    latency_half_life: float = 0.03
    """Seconds after which an old latency sample weighs half (the spill rule's EWMA)."""
    cost_half_life: float = 0.5
    """The same for the peak EWMA that ranks endpoints within a tier."""
    min_local_share: float = 0.05
    """The share the local tier keeps however slow it is, so its recovery is seen."""
    share_increase: float = 0.02
    """Added to the kept share when local answers are fast enough ..."""
    share_decrease: float = 0.8
    """... and the share multiplied by this when they are too slow; either at most once
    per local round trip, as TCP changes its window once per round trip (the answers
    of one busy spell are one signal, not many)."""

    def __post_init__(self) -> None:
        for name in ("report_ttl", "latency_half_life", "cost_half_life"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"LocalityPolicy.{name} must be a finite number > 0, got {value}")
        checks: dict[str, tuple[Callable[[float], bool], str]] = {
            "latency_tolerance": (lambda v: 1 <= v < math.inf, ">= 1"),
            "latency_slack": (lambda v: 0 <= v < math.inf, ">= 0"),
            "min_local_share": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "share_increase": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "share_decrease": (lambda v: 0 < v < 1, "in (0, 1)"),
        }
        for name, (valid, accepted) in checks.items():
            value = getattr(self, name)
            if not valid(value):  # NaN fails every comparison
                raise ValueError(f"LocalityPolicy.{name} must be {accepted}, got {value!r}")


STRICT_LOCALITY = LocalityPolicy(spill=False)


def node_and_report(
    metadata: Iterable[tuple[str, Any]] | None,
) -> tuple[str | None, bytes | None]:
    """The node a server named (``identity.announced_node``) and its load report's
    bytes (as ``loadreport.from_trailers`` finds them), in one pass over an
    answer's ``metadata``: every call's answer may carry them."""
    node = report = None
    for key, value in metadata or ():
        if key == NODE_METADATA_KEY:
            if node is None:
                node = value.decode() if isinstance(value, bytes) else str(value)
        elif report is None and isinstance(value, bytes) and key in _REPORT_KEYS:
            report = value
    return node, report


_REPORT_KEYS = (LOAD_REPORT_KEY, ORCA_REPORT_KEY)


class EndpointLoad:
    """What this client knows about one endpoint's load."""

    __slots__ = (
        "latency",
        "others",
        "outstanding",
        "report",
        "reported_at",
        "sampled_at",
        "tier",
    )

    def __init__(self) -> None:
        self.outstanding = 0
        """Attempts of this client in flight to the endpoint."""
        self.latency: float | None = None
        """Peak-EWMA of unary attempt latency, seconds (ranks endpoints of a tier)."""
        self.tier = 2
        """The endpoint's locality tier (0 = our node, 1 = our zone, 2 = the rest)."""
        self.sampled_at = 0.0
        self.report: LoadReport | None = None
        self.reported_at = 0.0
        self.others = 0
        """Calls of other clients in flight at the endpoint when it last reported."""

    def sample(self, latency: float, now: float, policy: LocalityPolicy) -> None:
        """The peak EWMA: a slower sample counts at once, faster ones decay in."""
        if self.latency is None or latency >= self.latency:
            self.latency = latency
        else:
            weight = 0.5 ** ((now - self.sampled_at) / policy.cost_half_life)
            self.latency = self.latency * weight + latency * (1 - weight)
        self.sampled_at = now

    def reported(self, report: LoadReport, now: float, *, finished_call: bool = True) -> None:
        """A report, from the answer of one of our calls (already not outstanding) or not."""
        self.report = report
        self.reported_at = now
        # A reporting call is counted in in_flight but has ended.
        self.others = max(report.in_flight - finished_call - self.outstanding, 0)

    def utilization(self, now: float, ttl: float) -> float | None:
        """Predicted in-flight/limit if one more call went there now; None if unknown."""
        report = self.report
        if report is None or not report.limit or now - self.reported_at > ttl:
            return None
        return (self.others + self.outstanding + 1) / report.limit

    def cost(self, now: float, ttl: float) -> float:
        """Lower is less loaded: utilization when reported, else outstanding x latency."""
        utilization = self.utilization(now, ttl)
        if utilization is not None:
            return utilization
        return (self.outstanding + 1) * (self.latency or 0.0)


class SpillController:
    """The share of calls the local tier keeps, from the latency rule (AIMD)."""

    def __init__(self, policy: LocalityPolicy) -> None:
        self.policy = policy
        self.local_share = 1.0
        self.changed_at = float("-inf")
        """When the share last changed: ``observe`` changes it at most once per local
        round trip, so before ``changed_at`` + a lower bound of the local latency,
        calling it would change nothing."""

    def observe(
        self, local: float | None, next_tier: float | None, floor: float | None, now: float
    ) -> None:
        """After a local answer: ``local``, ``next_tier`` latency EWMAs, ``floor`` the best seen."""
        reference = next_tier if next_tier is not None else floor
        if local is None or reference is None:
            return
        policy = self.policy
        if now - self.changed_at < local:
            return  # one change per local round trip: one busy spell is one signal
        self.changed_at = now
        if local > reference * policy.latency_tolerance + policy.latency_slack:
            self.local_share = max(policy.min_local_share, self.local_share * policy.share_decrease)
        else:
            self.local_share = min(1.0, self.local_share + policy.share_increase)
