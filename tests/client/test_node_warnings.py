"""The client says once when local-first routing cannot work: no node, or a node no replica has."""

from __future__ import annotations

import logging

import pytest

from protoc_gen_localfirst.runtime import SyncClient
from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import (
    NO_NODE_WARNING,
    missing_node_warning,
)

LOGGER = "protoc_gen_localfirst.balancer"
A = Endpoint("10.0.0.1", 1, node="node-a")
B = Endpoint("10.0.0.2", 1, node="node-b")
UNKNOWN = Endpoint("10.0.0.3", 1)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def test_no_node_warns_once_per_balancer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    balancer = Balancer([A, B], node=None, zone=None)
    for _ in range(5):
        balancer.order()
    balancer.update([A])
    assert _warnings(caplog) == [NO_NODE_WARNING]
    assert "NODE_NAME" in NO_NODE_WARNING and "spec.nodeName" in NO_NODE_WARNING
    assert "node=" in NO_NODE_WARNING


def test_a_node_with_a_replica_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    balancer = Balancer([A, B], node="node-a", zone=None)
    balancer.update([B, A])
    assert _warnings(caplog) == []


def test_a_node_no_endpoint_runs_on_warns_once_naming_nodes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    balancer = Balancer([A, B], node="node-x", zone=None)
    balancer.update([B])
    balancer.update([A, B])
    expected = (
        "no replica runs on this client's node 'node-x' (replicas are on node-a, node-b)."
        " Calls go to other nodes. If NODE_NAME (or node=) is not this pod's spec.nodeName,"
        " fix it; if this node simply runs no replica, this is expected"
    )
    assert _warnings(caplog) == [expected]


def test_once_our_node_was_seen_its_replica_may_come_and_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rolling update of the local replica leaves a moment without it: no warning."""
    caplog.set_level(logging.WARNING, LOGGER)
    balancer = Balancer([A, B], node="node-a", zone=None)
    balancer.update([B])
    balancer.update([B, Endpoint("10.0.0.9", 1, node="node-a")])
    assert _warnings(caplog) == []


def test_a_misspelled_node_gets_a_suggestion() -> None:
    message = missing_node_warning("Node-A", ["node-a", "node-b"])
    assert message is not None and "did you mean 'node-a'?" in message
    message = missing_node_warning("NODE_D", ["node-a", "node-b", "node-c", "node-d"])
    assert message is not None
    assert "(replicas are on node-a, node-b, node-c and 1 more); did you mean 'node-d'?" in message


def test_no_verdict_while_some_nodes_are_unknown(caplog: pytest.LogCaptureFixture) -> None:
    """DNS endpoints learn their nodes from the servers one by one: wait for all."""
    caplog.set_level(logging.WARNING, LOGGER)
    unknown_b = Endpoint("10.0.0.2", 1)
    balancer = Balancer([UNKNOWN, unknown_b], node="node-x", zone=None)
    assert _warnings(caplog) == []
    balancer.learn_node(UNKNOWN.address, "node-a")
    assert _warnings(caplog) == []
    balancer.learn_node(unknown_b.address, "node-b")
    assert len(_warnings(caplog)) == 1
    assert "'node-x'" in _warnings(caplog)[0]


def test_no_endpoints_no_verdict() -> None:
    assert missing_node_warning("node-x", []) is None
    assert missing_node_warning(None, ["node-a"]) is None
    assert missing_node_warning("node-a", ["node-a", None]) is None


def test_client_without_node_name_logs_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    caplog.set_level(logging.WARNING, "protoc_gen_localfirst")
    client = SyncClient("static:///127.0.0.1:1@node-a", probe_nodes=False)
    try:
        client.endpoint_order()
        client.endpoint_order()
    finally:
        client.close()
    assert _warnings(caplog) == [NO_NODE_WARNING]


def test_client_with_node_name_from_env_is_quiet(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    caplog.set_level(logging.WARNING, "protoc_gen_localfirst")
    client = SyncClient("static:///127.0.0.1:1@node-a", probe_nodes=False)
    client.close()
    assert _warnings(caplog) == []


def test_client_with_misspelled_node_name_warns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "nodea")
    caplog.set_level(logging.WARNING, "protoc_gen_localfirst")
    client = SyncClient("static:///127.0.0.1:1@node-a,127.0.0.1:2@node-b", probe_nodes=False)
    client.close()
    (message,) = _warnings(caplog)
    assert message.startswith("no replica runs on this client's node 'nodea'")
    assert "did you mean 'node-a'?" in message


def test_no_suggestion_for_nodes_that_differ_in_a_digit() -> None:
    message = missing_node_warning("ip-10-0-1-23", ["ip-10-0-1-24", "ip-10-0-1-25"])
    assert message is not None and "did you mean" not in message
    message = missing_node_warning("ip-10-0-1-23.ec2.internal", ["ip-10-0-1-23", "ip-10-0-1-5"])
    assert message is not None and "did you mean 'ip-10-0-1-23'?" in message
