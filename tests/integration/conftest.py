"""Real replica processes (the generated bootstrap) on loopback addresses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.cluster import REPO, ReplicaProcess

GENERATED = REPO / "generated"
if str(GENERATED) not in sys.path:
    sys.path.insert(0, str(GENERATED))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ReplicaProcess]]:
    """Three replicas: greeter-a1 on node-a (127.0.0.31), b1 and b2 on node-b."""
    replicas = [
        ReplicaProcess("greeter-a1", "node-a", "127.0.0.31", GENERATED, log_dir=tmp_path),
        ReplicaProcess("greeter-b1", "node-b", "127.0.0.32", GENERATED, log_dir=tmp_path),
        ReplicaProcess("greeter-b2", "node-b", "127.0.0.33", GENERATED, log_dir=tmp_path),
    ]
    try:
        for replica in replicas:
            replica.start(wait=False)
        for replica in replicas:
            replica.wait_serving()
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
