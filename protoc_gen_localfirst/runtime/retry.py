"""Retry policy (gRFC A6 semantics) and the tenacity loop around attempts."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

MAX_ATTEMPTS_CAP = 5
"""gRFC A6 caps maxAttempts (which counts the first call) at 5."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried; ``max_attempts`` counts the first attempt."""

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )
