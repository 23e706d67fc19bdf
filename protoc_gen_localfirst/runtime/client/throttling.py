"""gRFC A6 retry throttling: one token bucket per target."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryThrottling:
    """gRFC A6 retry throttling: a token bucket per target, shared by a client's calls.

    The count starts at ``max_tokens`` and stays within ``[0, max_tokens]``.
    Every failed attempt whose code is retryable for its method (or whose
    server pushback said "do not retry") takes 1 token; every successful call
    adds ``token_ratio``. While the count is ``<= max_tokens / 2`` no retry
    and no hedged attempt is sent (the first attempt always is).

    gRFC A6 leaves ``max_tokens`` to the service config (grpc throttles
    nothing unless told). Our default, 100, lets one replica crash with dozens
    of calls in flight (each a failed attempt) without throttling the
    failover, and still stops retries after 50 net failures in an outage;
    with 10 the chaos tests saw a single crash throttle retries away.
    """

    max_tokens: float = 100.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.token_ratio <= 0:
            raise ValueError("RetryThrottling.max_tokens and token_ratio must be > 0")


class RetryThrottle:
    """The token bucket of one target (``RetryThrottling`` semantics)."""

    def __init__(self, settings: RetryThrottling | None = None) -> None:
        self.settings = settings or RetryThrottling()
        self.max_tokens = self._max = float(self.settings.max_tokens)
        self._ratio = float(self.settings.token_ratio)
        self._threshold = self._max / 2
        self.tokens = self._max
        self._lock = threading.Lock()

    def record_failure(self) -> None:
        with self._lock:
            self.tokens = max(self.tokens - 1.0, 0.0)

    def record_success(self) -> None:
        if self.tokens < self._max:  # the common case (full bucket) takes no lock
            with self._lock:
                self.tokens = min(self.tokens + self._ratio, self._max)

    def allows_retry(self) -> bool:
        return self.tokens > self._threshold
