"""Retry policy with gRFC A6 semantics, and the per-call attempt state.

``CallAttempts`` is sans-IO: it decides which endpoint each attempt goes to,
how long it may take, whether a failure may be retried, and what error the
caller finally sees. The client only does the I/O. The loop itself (stop,
backoff with full jitter, sleeping) is tenacity's, shared by the asyncio and
the sync client through ``CallAttempts.retrying_options``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import tenacity

from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.errors import AttemptRecord, CallFailedError
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import DRAINING_KEY
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodPolicy

log = logging.getLogger("protoc_gen_localfirst.retry")

MAX_ATTEMPTS_CAP = 5
"""gRFC A6: maxAttempts counts the first call and values above 5 are treated as 5."""

DEFAULT_RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

NOT_PROCESSED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Codes that, before response headers, mean the request was not processed:
connection failures, refused streams (grpc surfaces REFUSED_STREAM as
UNAVAILABLE) and trailers-only UNAVAILABLE. Methods of unknown idempotency
retry only these, whatever their policy lists."""

PUSHBACK_KEY = "grpc-retry-pushback-ms"
PREVIOUS_ATTEMPTS_KEY = "localfirst-previous-rpc-attempts"
"""Sent on attempts after the first (the value is how many came before).
gRFC A6 names it ``grpc-previous-rpc-attempts``, but grpcio (1.85) accepts a
``grpc-`` key from the application and then drops it: the server never sees
it. So the runtime uses its own key, next to ``localfirst-node``."""

_SAFE = frozenset({Idempotency.IDEMPOTENT, Idempotency.NO_SIDE_EFFECTS})

# Details of transport failures that happened before the request was sent:
# grpc core's pick failure when no connection could be made, our HTTP/3
# client's connect/stream-open failures, and an HTTP/3 stream the server
# rejected unprocessed (RFC 9114: H3_REQUEST_REJECTED).
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "HTTP/3 request not sent",
    "H3_REQUEST_REJECTED",
)


def provably_not_processed(error: grpc.RpcError) -> bool:
    """Whether a failed attempt's request provably never reached a handler.

    UNAVAILABLE alone does not prove it: a connection reset after the request
    was sent ("Socket closed") also surfaces as UNAVAILABLE, and the handler
    may have run (the chaos benchmark saw non-idempotent calls run twice).
    Proof is either a failure before sending (see ``_NOT_SENT_MARKERS``) or a
    status the server itself answered (its trailers arrived: our bootstrap
    always sends some) choosing UNAVAILABLE, which by gRPC convention means
    "not processed, try again".
    """
    code, details = _status_of(error)
    return _not_processed(code, details, _trailing_pairs(error))


def _not_processed(
    code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, Any]]
) -> bool:
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    return any(marker in details for marker in _NOT_SENT_MARKERS) or len(trailers) > 0


_warned: set[str] = set()


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried; every attempt after the first goes to the next endpoint.

    ``max_attempts`` counts the first attempt (capped at 5, as in gRFC A6). The
    wait before attempt ``n+1`` is full jitter:
    ``uniform(0, min(initial_backoff * backoff_multiplier**(n-1), max_backoff))``,
    or exactly the server's ``grpc-retry-pushback-ms`` when it sent one.
    Only ``retryable_codes`` are retried, and never once the call is committed
    (response headers or a message arrived). UNAVAILABLE, the default, means
    "not processed" for any method. Wider sets apply only to methods whose
    proto says ``idempotency_level = IDEMPOTENT`` or ``NO_SIDE_EFFECTS``; for
    other methods the extra codes are ignored (with a one-time warning).

    ``per_attempt_timeout`` bounds each attempt inside the overall deadline (an
    attempt gets ``min(per_attempt_timeout, remaining)``); a per-attempt
    DEADLINE_EXCEEDED is retried when DEADLINE_EXCEEDED is in
    ``retryable_codes`` and the method is idempotent. ``hedging_delay`` (unary
    NO_SIDE_EFFECTS methods, asyncio client) sends the next attempt to the
    next endpoint when no answer came within that many seconds, up to
    ``max_attempts`` in flight; other methods ignore it.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.02
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(default=DEFAULT_RETRYABLE_CODES)
    per_attempt_timeout: float | None = None
    hedging_delay: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0")
        if self.backoff_multiplier < 1:
            raise ValueError(
                f"RetryPolicy.backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            )
        if self.per_attempt_timeout is not None and self.per_attempt_timeout <= 0:
            raise ValueError("RetryPolicy.per_attempt_timeout must be > 0")
        if self.hedging_delay is not None and self.hedging_delay < 0:
            raise ValueError("RetryPolicy.hedging_delay must be >= 0")
        object.__setattr__(self, "max_attempts", min(self.max_attempts, MAX_ATTEMPTS_CAP))
        object.__setattr__(self, "retryable_codes", frozenset(self.retryable_codes))

    def backoff(self, retry_number: int) -> float:
        """Full-jitter wait before retry number ``retry_number`` (1 = first retry)."""
        ceiling = self.initial_backoff * self.backoff_multiplier ** min(retry_number - 1, 64)
        return random.uniform(0.0, min(ceiling, self.max_backoff))

    def with_method_policy(self, method_policy: MethodPolicy) -> RetryPolicy:
        """This policy with the fields a proto's ``MethodPolicy`` sets replaced."""
        changes: dict[str, Any] = {
            f.name: getattr(method_policy, f.name)
            for f in dataclasses.fields(method_policy)
            if getattr(method_policy, f.name) is not None
        }
        if method_policy.retryable_codes is not None:  # names in the proto, codes here
            changes["retryable_codes"] = frozenset(
                grpc.StatusCode[name] for name in method_policy.retryable_codes
            )
        return dataclasses.replace(self, **changes) if changes else self


NO_RETRY = RetryPolicy(max_attempts=1)


def effective_policy(
    method: MethodInfo[Any, Any], client_default: RetryPolicy, per_call: RetryPolicy | None
) -> RetryPolicy:
    """Per-call ``retry=`` > the proto's ``MethodInfo.policy`` > the client's ``retry=``."""
    if per_call is not None:
        return per_call
    return client_default.with_method_policy(method.policy)


def allowed_codes(method: MethodInfo[Any, Any], policy: RetryPolicy) -> frozenset[grpc.StatusCode]:
    """The codes ``method`` may really retry under ``policy`` (idempotency-aware)."""
    if method.idempotency in _SAFE:
        return policy.retryable_codes
    allowed = policy.retryable_codes & NOT_PROCESSED_CODES
    if allowed != policy.retryable_codes and method.path not in _warned:
        _warned.add(method.path)
        ignored = sorted(c.name for c in policy.retryable_codes - allowed)
        log.warning(
            "%s is not marked idempotent (idempotency_level); its policy's retryable codes %s "
            "are ignored: only a request that provably was not processed is retried",
            method.path,
            ", ".join(ignored),
        )
    return allowed


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
        self._max = float(self.settings.max_tokens)
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


class AttemptFailed(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may follow."""

    def __init__(
        self,
        record: AttemptRecord,
        error: grpc.RpcError,
        *,
        retryable: bool,
        pushback: float | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(record.describe())
        self.record = record
        self.error = error
        self.retryable = retryable
        self.pushback = pushback
        """Seconds the server asked to wait before the next attempt, if it did."""
        self.throttled = throttled
        """A retry would have been allowed, but the target's token bucket is low."""


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
        no_endpoints_reason: str | Callable[[], str] = "no endpoints are known for this target",
        retryable_codes: frozenset[grpc.StatusCode] | None = None,
        throttle: RetryThrottle | None = None,
    ) -> None:
        self.method = method
        self._no_endpoints_reason = no_endpoints_reason
        self.policy = policy
        self.retryable_codes = (
            policy.retryable_codes if retryable_codes is None else retryable_codes
        )
        self.throttle = throttle
        self.timeout = timeout
        self._balancer = balancer
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._order = balancer.order()
        self.records: list[AttemptRecord] = []
        self.started = 0
        """Attempts started (hedged attempts run concurrently, so this can exceed records)."""
        self.committed = False
        self.pushback: float | None = None
        self._backoff_retries = 0
        self.info: MethodInfo[Any, Any] | None = None
        """The rpc (set by the client)."""
        self.metadata: Sequence[tuple[str, str | bytes]] | None = None
        """The caller's request metadata (set by the client)."""

    def next_endpoint(self) -> Endpoint:
        """The endpoint for the next attempt, in locality order, wrapping around."""
        if not self._order:
            reason = self._no_endpoints_reason
            raise CallFailedError(
                method=self.method,
                code=grpc.StatusCode.UNAVAILABLE,
                summary=reason if isinstance(reason, str) else reason(),
                attempts=(),
            )
        endpoint = self._order[self.started % len(self._order)]
        self.started += 1
        return endpoint

    def attempt_timeout(self) -> float | None:
        """Time for the next attempt: ``min(per_attempt_timeout, what remains of the deadline)``."""
        per_attempt = self.policy.per_attempt_timeout
        if self._deadline is None:
            return per_attempt
        remaining = max(self._deadline - self._clock(), 0.0)
        return remaining if per_attempt is None else min(per_attempt, remaining)

    def deadline_passed(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def succeeded(self, endpoint: Endpoint) -> None:
        self._balancer.record_success(endpoint)
        if self.throttle is not None:
            self.throttle.record_success()

    def failed(self, endpoint: Endpoint, error: grpc.RpcError) -> AttemptFailed:
        """Record a failed attempt; the returned exception says whether to retry."""
        code, details = _status_of(error)
        record = AttemptRecord(endpoint=endpoint, code=code, details=details)
        self.records.append(record)
        deadline_passed = self.deadline_passed()
        if not self.committed:
            if code in NOT_PROCESSED_CODES:
                self._balancer.record_connection_failure(endpoint)
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED and not deadline_passed:
                # The per-attempt timeout cut it: the endpoint is slow or frozen.
                self._balancer.record_timeout(endpoint)
        trailers = _trailing_pairs(error)
        pushback = _pushback(trailers)
        # A stopping server's refusal is not overload: it does not drain the
        # retry budget (else a rolling redeploy throttles every retry away).
        draining = any(key == DRAINING_KEY for key, _ in trailers)
        counts = (code in self.retryable_codes or pushback == _DO_NOT_RETRY) and not draining
        if counts and self.throttle is not None:
            self.throttle.record_failure()
        replay_safe = self.info is not None and self.info.idempotency in _SAFE
        retryable = (
            code in self.retryable_codes
            and pushback != _DO_NOT_RETRY
            and not self.committed
            and not deadline_passed
            and (replay_safe or _not_processed(code, details, trailers))
        )
        throttled = False
        if retryable and self.throttle is not None and not self.throttle.allows_retry():
            retryable, throttled = False, True
        self.pushback = None if pushback == _DO_NOT_RETRY else pushback
        return AttemptFailed(
            record, error, retryable=retryable, pushback=self.pushback, throttled=throttled
        )

    def next_wait(self) -> float:
        """Seconds to wait before the next retry: the server's pushback, else full jitter.

        After a pushback the backoff starts again from ``initial_backoff`` (gRFC A6).
        """
        if self.pushback is not None:
            wait, self.pushback, self._backoff_retries = self.pushback, None, 0
            return wait
        self._backoff_retries += 1
        return self.policy.backoff(self._backoff_retries)

    def final_error(self, failure: AttemptFailed) -> grpc.RpcError:
        """What the caller sees once no further attempt will be made.

        A status the method chose to return (not retryable, or committed) is the
        answer of the service: it is raised unchanged, trailers and all. Running
        out of attempts or of time raises ``CallFailedError``, naming every
        endpoint tried; so does a retry refused by throttling.
        """
        passed = self.deadline_passed()
        if passed or failure.record.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if passed or self.policy.per_attempt_timeout is None:
                summary = f"deadline of {self.timeout}s exceeded after {_attempts(self.records)}"
            else:
                summary = (
                    f"attempt timeout of {self.policy.per_attempt_timeout}s exceeded "
                    f"after {_attempts(self.records)}"
                )
            return CallFailedError(
                method=self.method,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                summary=summary,
                attempts=self.records,
            )
        if failure.throttled:
            summary = (
                f"retries throttled (too many recent failures) after {_attempts(self.records)}"
            )
        elif not failure.retryable:
            return failure.error
        elif len(self.records) >= self.policy.max_attempts:
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

    def retrying_options(
        self, before_sleep: Callable[[tenacity.RetryCallState], None] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying``."""
        options: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(self.policy.max_attempts)
            | _StopAtDeadline(self._deadline, self._clock),
            "wait": lambda retry_state: self.next_wait(),
            "retry": tenacity.retry_if_exception(
                lambda e: isinstance(e, AttemptFailed) and e.retryable
            ),
            "reraise": True,
        }
        if before_sleep is not None:
            options["before_sleep"] = before_sleep
        return options


_DO_NOT_RETRY = -1.0


def _pushback(trailers: Sequence[tuple[str, Any]]) -> float | None:
    """``grpc-retry-pushback-ms`` from the trailers: seconds, ``_DO_NOT_RETRY``, or None.

    A negative or unparsable value means "do not retry" (gRFC A6).
    """
    for key, value in trailers:
        if key == PUSHBACK_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            try:
                millis = int(text.strip())
            except ValueError:
                return _DO_NOT_RETRY
            return _DO_NOT_RETRY if millis < 0 else millis / 1000.0
    return None


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


def _trailing_pairs(error: grpc.RpcError) -> tuple[tuple[str, Any], ...]:
    """The error's trailing metadata as (key, value) pairs; none if it has none."""
    trailing = getattr(error, "trailing_metadata", None)
    return tuple(trailing() or ()) if callable(trailing) else ()


def _trailing_metadata(error: grpc.RpcError) -> grpc.aio.Metadata | None:
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(trailing):
        return None
    value = trailing()
    if isinstance(value, grpc.aio.Metadata):
        return value
    return grpc.aio.Metadata(*tuple(value or ()))
