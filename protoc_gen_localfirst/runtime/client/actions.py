"""What the call state machine (``call``) and its drivers exchange: the settings a
call starts with, and the actions ``next_action()`` answers. Plain data.

- ``Attempt``: start this attempt (endpoint, timeout, metadata).
- ``Wait(seconds)``: sleep that long, or, while hedged attempts are in flight,
  wait until one of them ends or ``seconds`` pass (None: until one ends).
- ``AwaitEndpoints(seconds, version)``: every known endpoint failed to
  connect and discovery was asked to re-resolve; wait until the balancer's
  endpoint set changes from ``version`` or ``seconds`` pass.
- ``GiveUp(error)``: raise ``error``; no further attempt will be made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.observers import AttemptInfo, ClientEvents
from protoc_gen_localfirst.runtime.client.policy import RetryPolicy
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottle
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import MethodInfo, MethodKind

__all__ = ["Action", "Attempt", "AwaitEndpoints", "CallSettings", "GiveUp", "Metadata", "Wait"]

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(slots=True)
class Attempt:
    """Start an attempt: send the request to ``endpoint`` within ``timeout`` seconds."""

    number: int
    """1 for the first attempt of the call."""
    endpoint: Endpoint
    timeout: float | None
    metadata: Metadata | None
    hedged: bool
    started_at: float
    info: AttemptInfo | None = None
    """The observers' record of this attempt (None: no observers)."""
    read_trailers: bool = True
    """Whether the driver should read the answer's trailers for ``attempt_succeeded``:
    observers listen, or the balancer wants them (the server's node is unknown, or
    its load report is due). Most answers' are not read: that costs a call CPU."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep ``seconds``; with attempts in flight, wake early when one ends (None: no limit)."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class AwaitEndpoints:
    """Wait for the endpoint set to change from ``version``, at most ``seconds``."""

    seconds: float
    version: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Raise ``error`` (``from cause`` when it replaces the attempt's own error)."""

    error: grpc.RpcError
    cause: grpc.RpcError | None = None

    def raise_error(self) -> NoReturn:
        if self.cause is None:
            raise self.error
        raise self.error from self.cause


Action = Attempt | Wait | AwaitEndpoints | GiveUp


@dataclass(frozen=True, slots=True)
class CallSettings:
    """What a call needs from its client, fixed for the call."""

    info: MethodInfo[Any, Any]
    policy: RetryPolicy
    retryable_codes: frozenset[grpc.StatusCode]
    hedging: bool
    balancer: Balancer
    events: ClientEvents
    throttle: RetryThrottle | None
    no_endpoints_reason: Callable[[], str]
    refresh: Callable[[], None] = lambda: None
    """Ask discovery to re-resolve now, past its rate limit."""
    unsent_patience: float = 5.0
    """Seconds a call without deadline keeps retrying attempts that could not be sent."""
    target: str = ""
    """The client's target, for observers."""
    transport: str = "h2"
    """The client's transport (``h2``, ``h3``, ``auto``), for observers."""
    path: str = field(init=False)
    """``info.path``, worked out once."""
    unary: bool = field(init=False)
    """Whether the rpc is unary-unary (its answers' latency feeds the balancer)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", self.info.path)
        object.__setattr__(self, "unary", self.info.kind is MethodKind.UNARY_UNARY)
