from collections.abc import Iterator

import pytest

from tests.client.echo import Replica


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Three replicas on loopback addresses, one per simulated node: a, b, c."""
    started = [
        Replica("127.0.0.11", "node-a").start(),
        Replica("127.0.0.12", "node-b").start(),
        Replica("127.0.0.13", "node-c").start(),
    ]
    yield started
    for replica in started:
        replica.close()


def static_target(replicas: list[Replica]) -> str:
    return "static:///" + ",".join(r.static for r in replicas)
