"""Who and where this process is: node and zone, from the Downward API or env.

Kubernetes puts the node name into a pod through the Downward API
(``env: NODE_NAME from fieldRef spec.nodeName``). The zone has no Downward API
field, so it comes from ``LOCALFIRST_ZONE`` (or, later, from EndpointSlices).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

NODE_ENV = "NODE_NAME"
ZONE_ENV = "LOCALFIRST_ZONE"
POD_IP_ENV = "POD_IP"

NODE_METADATA_KEY = "localfirst-node"
"""Response metadata key under which a server announces its node name."""

DRAINING_KEY = "localfirst-draining"
"""Trailer a stopping server adds to the UNAVAILABLE it answers new calls with;
clients do not count those refusals against their retry budget."""


def own_node(explicit: str | None = None) -> str | None:
    """The caller's node: ``explicit`` if given, else ``$NODE_NAME``, else None."""
    if explicit:
        return explicit
    return os.environ.get(NODE_ENV) or None


NO_NODE_WARNING = (
    "local-first routing is off for this client: it has no node name (neither node= nor "
    "$NODE_NAME is set), so its calls rotate over all replicas; set NODE_NAME from the "
    "Downward API (env: - name: NODE_NAME, valueFrom: fieldRef: fieldPath: spec.nodeName) "
    "or pass node=..."
)
"""Logged once per client without a node (``docs/warnings.md``)."""

SHOWN_NODES = 3
"""How many of the nodes seen a ``missing_node_warning`` names."""


def missing_node_warning(node: str | None, seen: Iterable[str | None]) -> str | None:
    """Why ``node`` looks wrong given the nodes endpoints ``seen`` run on, or None.

    None when there is nothing to say yet: no node, no endpoint, or some
    endpoint whose node is unknown (a DNS source learns nodes one by one from
    the servers, so a verdict waits for all of them). A message when every
    endpoint's node is known and none is ``node``: either the name is wrong
    (misspelled, or not the Kubernetes node name) or this node runs no replica.
    """
    nodes = list(seen)
    if node is None or not nodes or any(n is None for n in nodes):
        return None
    known = sorted({n for n in nodes if n is not None})
    if node in known:
        return None
    shown = ", ".join(known[:SHOWN_NODES]) + (
        f" and {len(known) - SHOWN_NODES} more" if len(known) > SHOWN_NODES else ""
    )
    close = [n for n in known if _loose(n) == _loose(node)]
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (
        f"no replica runs on this client's node {node!r} (replicas are on {shown}){hint} "
        "Calls go to other nodes. If NODE_NAME (or node=) is not this pod's spec.nodeName, "
        "fix it; if this node simply runs no replica, this is expected"
    )


def _loose(name: str) -> str:
    """A node name without case, separators or domain: ``Node_A.example`` -> ``nodea``.

    Only this kind of near miss gets a "did you mean": node names that differ
    in a digit (``ip-10-0-1-23``, ``ip-10-0-1-24``) are different nodes.
    """
    return "".join(c for c in name.split(".")[0].lower() if c.isalnum())


def own_zone(explicit: str | None = None) -> str | None:
    """The caller's zone: ``explicit`` if given, else ``$LOCALFIRST_ZONE``, else None."""
    if explicit:
        return explicit
    return os.environ.get(ZONE_ENV) or None


OVERLOADED_KEY = "localfirst-overloaded"
"""Trailer a server adds when admission control refused a call before its handler
ran (at its concurrency limit): the call was not processed, so any client may
send it to another replica at once, idempotent or not."""


def announced_node(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The node a server named in response metadata (``NODE_METADATA_KEY``), if it did."""
    for key, value in metadata or ():
        if key == NODE_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
