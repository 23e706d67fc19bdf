"""Retry policy with gRFC A6 semantics, and the per-call attempt state.

``CallAttempts`` is sans-IO: it decides which endpoint each attempt goes to,
how long it may take, whether a failure may be retried, and what error the
caller finally sees. The client only does the I/O. The loop itself (stop,
backoff with full jitter, sleeping) is tenacity's, shared by the asyncio and
the sync client through ``CallAttempts.retrying_options``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import tenacity

from protoc_gen_localfirst.runtime.balancer import Balancer
from protoc_gen_localfirst.runtime.endpoints import Endpoint
from protoc_gen_localfirst.runtime.errors import AttemptRecord, CallFailedError

MAX_ATTEMPTS_CAP = 5
"""gRFC A6: maxAttempts counts the first call and values above 5 are treated as 5."""

DEFAULT_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

# Codes that mean the attempt could not reach the server at all (or the server
# refused it before processing); they eject the endpoint for a while.
_CONNECTION_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried; every attempt after the first goes to the next endpoint.

    ``max_attempts`` counts the first attempt (capped at 5, as in gRFC A6). The
    wait before attempt ``n+1`` is full jitter:
    ``uniform(0, min(initial_backoff * backoff_multiplier**(n-1), max_backoff))``.
    Only ``retryable_codes`` are retried, and never once the call is committed
    (response headers or a message arrived). UNAVAILABLE, the default, means
    "not processed" for any method; widen the set only for idempotent methods.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.02
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(default=DEFAULT_RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0")
        if self.backoff_multiplier < 1:
            raise ValueError(
                f"RetryPolicy.backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            )
        object.__setattr__(self, "max_attempts", min(self.max_attempts, MAX_ATTEMPTS_CAP))
        object.__setattr__(self, "retryable_codes", frozenset(self.retryable_codes))

    def wait_strategy(self) -> tenacity.wait.wait_base:
        """Full-jitter exponential backoff, as tenacity's ``wait_random_exponential``."""
        return tenacity.wait_random_exponential(
            multiplier=self.initial_backoff, exp_base=self.backoff_multiplier, max=self.max_backoff
        )


NO_RETRY = RetryPolicy(max_attempts=1)


class AttemptFailed(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may follow."""

    def __init__(self, record: AttemptRecord, error: grpc.RpcError, *, retryable: bool) -> None:
        super().__init__(record.describe())
        self.record = record
        self.error = error
        self.retryable = retryable


class CallAttempts:
    """The attempts of one call: endpoint order, deadline, retry decisions, final error."""

    def __init__(
        self,
        *,
        method: str,
        balancer: Balancer,
        policy: RetryPolicy,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
        no_endpoints_reason: str = "no endpoints are known for this target",
    ) -> None:
        self.method = method
        self._no_endpoints_reason = no_endpoints_reason
        self.policy = policy
        self.timeout = timeout
        self._balancer = balancer
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._order = balancer.order()
        self.records: list[AttemptRecord] = []
        self.committed = False

    def next_endpoint(self) -> Endpoint:
        """The endpoint for the next attempt, in locality order, wrapping around."""
        if not self._order:
            raise CallFailedError(
                method=self.method,
                code=grpc.StatusCode.UNAVAILABLE,
                summary=self._no_endpoints_reason,
                attempts=(),
            )
        return self._order[len(self.records) % len(self._order)]

    def attempt_timeout(self) -> float | None:
        """Time left for the next attempt: what remains of the overall deadline."""
        if self._deadline is None:
            return None
        return max(self._deadline - self._clock(), 0.0)

    def deadline_passed(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def succeeded(self, endpoint: Endpoint) -> None:
        self._balancer.record_success(endpoint)

    def failed(self, endpoint: Endpoint, error: grpc.RpcError) -> AttemptFailed:
        """Record a failed attempt; the returned exception says whether to retry."""
        code, details = _status_of(error)
        record = AttemptRecord(endpoint=endpoint, code=code, details=details)
        self.records.append(record)
        if code in _CONNECTION_CODES and not self.committed:
            self._balancer.record_connection_failure(endpoint)
        retryable = (
            code in self.policy.retryable_codes
            and not self.committed
            and not self.deadline_passed()
        )
        return AttemptFailed(record, error, retryable=retryable)

    def final_error(self, failure: AttemptFailed) -> grpc.RpcError:
        """What the caller sees once no further attempt will be made.

        A status the method chose to return (not retryable, or committed) is the
        answer of the service: it is raised unchanged, trailers and all. Running
        out of attempts or of time raises ``CallFailedError``, naming every
        endpoint tried.
        """
        if self.deadline_passed() or failure.record.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CallFailedError(
                method=self.method,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                summary=f"deadline of {self.timeout}s exceeded after {_attempts(self.records)}",
                attempts=self.records,
            )
        if not failure.retryable:
            return failure.error
        if len(self.records) >= self.policy.max_attempts:
            summary = f"all {_attempts(self.records)} failed"
        else:
            summary = f"gave up after {_attempts(self.records)}: backoff would pass the deadline"
        return CallFailedError(
            method=self.method,
            code=failure.record.code,
            summary=summary,
            attempts=self.records,
            trailing_metadata=_trailing_metadata(failure.error),
        )

    def retrying_options(self) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying``."""
        return {
            "stop": tenacity.stop_after_attempt(self.policy.max_attempts)
            | _StopAtDeadline(self._deadline, self._clock),
            "wait": self.policy.wait_strategy(),
            "retry": tenacity.retry_if_exception(
                lambda e: isinstance(e, AttemptFailed) and e.retryable
            ),
            "reraise": True,
        }


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop rather than sleep past the overall deadline (it spans all attempts)."""

    def __init__(self, deadline: float | None, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if self._deadline is None:
            return False
        upcoming = retry_state.upcoming_sleep or 0.0
        return self._clock() + upcoming >= self._deadline


def _attempts(records: Sequence[AttemptRecord]) -> str:
    return "1 attempt" if len(records) == 1 else f"{len(records)} attempts"


def _status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    status = code() if callable(code) else grpc.StatusCode.UNKNOWN
    text = details() if callable(details) else str(error)
    return status, text or ""


def _trailing_metadata(error: grpc.RpcError) -> grpc.aio.Metadata | None:
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(trailing):
        return None
    value = trailing()
    if isinstance(value, grpc.aio.Metadata):
        return value
    return grpc.aio.Metadata(*tuple(value or ()))
