"""``python -m protoc_gen_localfirst endpoints TARGET``: what a client would see.

Resolves TARGET exactly as a generated client does (same discovery, same node
probes), then prints every endpoint with node, zone, readiness and the load
it reports (one health check each: calls in flight, limit, CPU), the share of
calls it would get now, and the order in which a call from this node would
try them.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Sequence

from protoc_gen_localfirst.runtime.client.sync import SyncClient
from protoc_gen_localfirst.runtime.discovery import DiscoveryError, KubernetesOptions
from protoc_gen_localfirst.runtime.discovery.endpoints import TargetError
from protoc_gen_localfirst.runtime.loadreport import LoadReport

TIER_NAMES = {0: "same node", 1: "same zone", 2: "elsewhere"}


def endpoints_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protoc_gen_localfirst endpoints",
        description="Show the endpoints a local-first client sees for TARGET, and their order.",
    )
    parser.add_argument("target", help="e.g. dns:///greeter.default.svc.cluster.local:50051")
    parser.add_argument("--node", help="the caller's node (default: $NODE_NAME)")
    parser.add_argument("--zone", help="the caller's zone (default: $LOCALFIRST_ZONE)")
    parser.add_argument("--kubeconfig", help="for kubernetes:/// targets outside a cluster")
    parser.add_argument("--wait", type=float, default=3.0, help="seconds to wait for discovery")
    parser.add_argument(
        "--no-probe", action="store_true", help="do not health-check endpoints to learn their node"
    )
    args = parser.parse_args(argv)
    try:
        client = SyncClient(
            args.target,
            node=args.node,
            zone=args.zone,
            probe_nodes=not args.no_probe,
            kubernetes=KubernetesOptions(kubeconfig=args.kubeconfig),
        )
    except (TargetError, DiscoveryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return _report(client, args.wait)
    finally:
        client.close()


def _report(client: SyncClient, wait: float) -> int:
    deadline = time.monotonic() + wait
    client.wait_for_endpoints(wait)
    # Give node probes the rest of the wait to answer.
    while time.monotonic() < deadline and any(e.node is None for e in client.balancer.endpoints):
        time.sleep(0.05)
    balancer = client.balancer
    print(f"target  {client.target}  ({type(client.source).__name__})")
    print(
        f"caller  node {balancer.node or '(unknown: set NODE_NAME)'}, zone {balancer.zone or '-'}"
    )
    endpoints = balancer.endpoints
    if client.source.last_error:
        print(f"discovery error: {client.source.last_error}")
    if not endpoints:
        print("no endpoints")
        return 1
    loads = _ask_load(client) if client.prober is not None else {}
    share = _first_attempt_share(client)
    rows = [("ADDRESS", "NODE", "ZONE", "READY", "IN FLIGHT", "LIMIT", "CPU", "SHARE")]
    for e in endpoints:
        report = loads.get(e.address)
        rows.append(
            (
                e.address,
                e.node or "?",
                e.zone or "-",
                "yes" if e.ready else "no",
                "?" if report is None else str(report.in_flight),
                "-" if report is None or report.limit is None else str(report.limit),
                "?" if report is None else f"{report.cpu_utilization:.0%}",
                f"{share.get(e.address, 0.0):.0%}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(
        f"{len(endpoints)} endpoint(s) (load as the servers report it; SHARE: of first attempts):"
    )
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"a call from {balancer.node or 'this process'} tries, in order:")
    for position, endpoint in enumerate(balancer.order(), 1):
        why = (
            "ejected (failing)"
            if balancer.is_ejected(endpoint)
            else TIER_NAMES[balancer.tier(endpoint)]
        )
        print(f"  {position}. {endpoint.describe()}  {why}")
    return 0


def _ask_load(client: SyncClient) -> dict[str, LoadReport]:
    """Each ready endpoint's load report, from one health check each."""
    assert client.prober is not None
    reports: dict[str, LoadReport] = {}
    for endpoint in client.balancer.ready_endpoints:
        _, report = client.prober.ask(endpoint)
        if report is not None:
            reports[endpoint.address] = report
            client.balancer.reported(endpoint, report)
    return reports


def _first_attempt_share(client: SyncClient, calls: int = 1000) -> dict[str, float]:
    """Where the first attempts of the next ``calls`` calls would go, as the balancer decides now."""
    firsts = collections.Counter(
        order[0].address for order, _ in (client.balancer.plan() for _ in range(calls)) if order
    )
    return {address: count / calls for address, count in firsts.items()}
