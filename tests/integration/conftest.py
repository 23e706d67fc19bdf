"""Real replica processes (the generated bootstrap) on loopback addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.cluster import ReplicaProcess
from tests.support.cluster import start_all


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ReplicaProcess]]:
    """Three replicas: greeter-a1 on node-a (127.0.0.31), b1 and b2 on node-b."""
    replicas = [
        ReplicaProcess("greeter-a1", "node-a", "127.0.0.31", log_dir=tmp_path),
        ReplicaProcess("greeter-b1", "node-b", "127.0.0.32", log_dir=tmp_path),
        ReplicaProcess("greeter-b2", "node-b", "127.0.0.33", log_dir=tmp_path),
    ]
    try:
        start_all(replicas)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
