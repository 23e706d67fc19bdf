"""Chaos scenarios: real replica processes on loopback, a real DNS server, bounded load.

Replicas write one line per executed SayHello (``demo.replica
--executions-file``), so duplicates of a non-idempotent call are counted on the
server side, across replicas. Every process a test stops (SIGSTOP) is
continued or killed by its PID in a ``finally``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Pods
from tests.support.dnsmasq import Dnsmasq

NAME = "greeter.test"
HANDLER_DELAY = 0.002
"""SayHello works 2 ms after recording its execution: a kill can land between
"ran" and "answered", which is when a careless retry duplicates a call."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: kills, freezes and redeploys real replica processes under load"
    )


PODS_ARGS = ("--handler-delay", str(HANDLER_DELAY),
             # A draining replica must keep serving until clients can see it gone
             # (DNS TTL 1 s here; deploy/ uses 5 s): else a redeploy leaves
             # clients with only refusing replicas.
             "--drain-delay", "1.5")  # fmt: skip


def chaos_pods(log_dir: Path, dns_server: Dnsmasq | None = None) -> Pods:
    """Replica processes on one shared port that record their SayHello executions."""
    return Pods(log_dir, dns=dns_server, name=NAME, extra_args=PODS_ARGS, count_executions=True)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    """a1 on node-a, b1 and b2 on node-b; no DNS."""
    running = chaos_pods(tmp_path)
    try:
        running.start("a1", "node-a", "127.0.0.171")
        running.start("b1", "node-b", "127.0.0.172")
        running.start("b2", "node-b", "127.0.0.173")
        yield running
    finally:
        running.close()


@pytest.fixture
def dns_pods(tmp_path: Path) -> Iterator[Pods]:
    """The same three replicas, published as ``greeter.test`` by dnsmasq (TTL 1 s)."""
    with Dnsmasq({}, ttl=1) as dns_server:
        running = chaos_pods(tmp_path, dns_server)
        try:
            running.start("a1", "node-a", "127.0.0.174")
            running.start("b1", "node-b", "127.0.0.175")
            running.start("b2", "node-b", "127.0.0.176")
            running.publish("a1", "b1", "b2")
            yield running
        finally:
            running.close()


def resilience_options() -> dict[str, Any]:
    """Per-attempt timeout and hedging for the client, if the runtime has them now.

    Returns the client keyword arguments that exist in the runtime as it is
    (``retry=RetryPolicy(per_attempt_timeout=..., hedging_delay=...)``), and
    an empty dict while those features have not landed.
    """
    import grpc

    from protoc_gen_localfirst.runtime import RetryPolicy

    fields = {f.name for f in dataclasses.fields(RetryPolicy)}
    wanted: dict[str, Any] = {"per_attempt_timeout": 0.25, "hedging_delay": 0.05}
    present = {k: v for k, v in wanted.items() if k in fields}
    if "per_attempt_timeout" in present:
        # An attempt that timed out is retried elsewhere, where that is safe: the
        # runtime applies the wider set to idempotent methods only (SayHello is not).
        present["retryable_codes"] = frozenset(
            {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        )
    return {"retry": RetryPolicy(**present)} if present else {}


def features() -> set[str]:
    options = resilience_options()
    if not options:
        return set()
    policy = options["retry"]
    return {k for k in ("per_attempt_timeout", "hedging_delay") if hasattr(policy, k)}
