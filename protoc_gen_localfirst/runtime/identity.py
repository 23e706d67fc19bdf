"""Who and where this process is: node and zone, from the Downward API or env.

Kubernetes puts the node name into a pod through the Downward API
(``env: NODE_NAME from fieldRef spec.nodeName``). The zone has no Downward API
field, so it comes from ``LOCALFIRST_ZONE`` (or, later, from EndpointSlices).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
