"""``python -m protoc_gen_localfirst endpoints TARGET``: what a client would see.

Resolves TARGET exactly as a generated client does (same discovery, same node
probes), then prints every endpoint with node, zone and readiness, and the
order in which a call from this node would try them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from protoc_gen_localfirst.runtime.client.sync import SyncClient
from protoc_gen_localfirst.runtime.discovery import DiscoveryError, KubernetesOptions
from protoc_gen_localfirst.runtime.discovery.endpoints import TargetError

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
    rows = [("ADDRESS", "NODE", "ZONE", "READY")]
    rows += [
        (e.address, e.node or "?", e.zone or "-", "yes" if e.ready else "no") for e in endpoints
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"{len(endpoints)} endpoint(s):")
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
